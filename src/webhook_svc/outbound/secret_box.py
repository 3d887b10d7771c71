"""Signing secrets at rest: AES-256-GCM under a key derived from the webhook service's own
key pair, so a copy of the database alone cannot sign (forge) a merchant's events. The
endpoint's id is the associated data: a secret moved to another row does not decrypt."""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class SecretBox:
    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    def seal(self, endpoint_id: str, secret: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), endpoint_id.encode())
        return base64.b64encode(nonce + sealed).decode()

    def open(self, endpoint_id: str, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], endpoint_id.encode()).decode()
