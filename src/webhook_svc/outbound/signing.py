"""Standard Webhooks signatures (standardwebhooks.com): the `webhook-id`, `webhook-timestamp`
and `webhook-signature` headers of a delivery, over `{id}.{timestamp}.{body}`.

- `v1`: HMAC-SHA256 with the endpoint's secret, `whsec_` + base64 of 24 random bytes (the
  merchant holds the same secret);
- `v1a`: Ed25519 with the endpoint's signing key `whsk_` + base64 of its 32-byte seed; the
  merchant verifies with `whpk_` + base64 of the public key and holds nothing that could
  forge an event.

After a roll, the previous secret signs beside the new one until it expires: the header lists
both signatures, space-separated, and a receiver accepts either."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SCHEMES = ("v1", "v1a")


def new_secret(scheme: str) -> str:
    if scheme == "v1":
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return "whsk_" + base64.b64encode(secrets.token_bytes(32)).decode()


def public_key(secret: str) -> str:
    """The `whpk_` key that verifies a v1a secret's signatures ("" for a v1 secret)."""
    if not secret.startswith("whsk_"):
        return ""
    raw = _signing_key(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "whpk_" + base64.b64encode(raw).decode()


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = signed_content(msg_id, timestamp, body)
    if secret.startswith("whsk_"):
        return "v1a," + base64.b64encode(_signing_key(secret).sign(content)).decode()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def headers(secrets_in_use: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret, msg_id, timestamp, body) for secret in secrets_in_use
        ),
    }


def shown(secret: str) -> str:
    """A secret as logs may show it: its last 4 characters."""
    return "…" + secret[-4:]


def _signing_key(secret: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret.removeprefix("whsk_")))
