"""The PSPs' webhook signatures, Stripe's scheme (the sandbox PSP signs the same way):

    Stripe-Signature: t=1700000000,v1=<hex HMAC-SHA256 of "{t}.{raw body}" with the secret>

Several `v1` values may be present (a secret being rolled): one matching is enough. Other
schemes (`v0`, …) are ignored. A timestamp more than `tolerance` seconds away from now is
refused, so a captured request cannot be replayed later."""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """`reason`: missing_signature | invalid_signature | stale_signature."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header value for `payload` (the sandbox PSP and the tests sign with it)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(payload, secret, t)}"


def _digest(payload: bytes, secret: str, timestamp: int | str) -> str:
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(
    payload: bytes,
    header: str | None,
    secrets: list[str],
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """The signed timestamp, if one `v1` signature is the HMAC of the payload with one of
    `secrets` and the timestamp is within `tolerance`; SignatureError otherwise."""
    if not header or not header.strip():
        raise SignatureError("missing_signature", "no signature header")
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not timestamp.isascii() or not timestamp.isdigit():
        raise SignatureError("invalid_signature", "the signature header has no timestamp")
    if not signatures:
        raise SignatureError("invalid_signature", "the signature header has no v1 signature")
    wanted = [_digest(payload, secret, timestamp) for secret in secrets if secret]
    # Every comparison runs (constant time per candidate): no early exit leaks which matched.
    matched = False
    for signature in signatures:
        for expected in wanted:
            matched |= hmac.compare_digest(signature.encode(), expected.encode())
    if not matched:
        raise SignatureError("invalid_signature", "no signature matches the payload")
    signed_at = int(timestamp)
    current = time.time() if now is None else now
    if abs(current - signed_at) > tolerance:
        raise SignatureError(
            "stale_signature", f"the signature's timestamp is more than {tolerance:g} s away"
        )
    return signed_at
