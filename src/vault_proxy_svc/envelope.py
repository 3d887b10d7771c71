"""Envelope encryption of card numbers: a fresh AES-256-GCM data key per card, wrapped by a
versioned key-encryption key (KEK). The associated data binds each ciphertext (and its wrapped
key) to its token, merchant and mode, so rows cannot be swapped between cards or merchants."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault_proxy_svc.keys import KeyProvider


@dataclass(frozen=True)
class Sealed:
    kek_version: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes


def binding(token: str, merchant_id: str, livemode: bool) -> dict[str, str]:
    """What a ciphertext is bound to; also the KMS encryption context."""
    return {"token": token, "merchant": merchant_id, "mode": "live" if livemode else "test"}


def _aad(context: dict[str, str]) -> bytes:
    return "|".join(f"{k}={context[k]}" for k in sorted(context)).encode()


async def seal(pan: str, context: dict[str, str], keys: KeyProvider, kek_version: str) -> Sealed:
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ciphertext = AESGCM(data_key).encrypt(nonce, pan.encode(), _aad(context))
    wrapped = await keys.wrap(kek_version, data_key, context)
    return Sealed(kek_version, wrapped, nonce, ciphertext)


async def unseal(sealed: Sealed, context: dict[str, str], keys: KeyProvider) -> str:
    data_key = await keys.unwrap(sealed.kek_version, sealed.wrapped_key, context)
    return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, _aad(context)).decode()


def fingerprint(secret: bytes, merchant_id: str, pan: str) -> str:
    """Same card, same merchant: same fingerprint; another merchant gets another one. Keyed,
    so it cannot be reversed or brute-forced over the card space without the secret."""
    digest = hmac.new(secret, f"{merchant_id}:{pan}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode()
