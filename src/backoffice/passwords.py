"""Operators' passwords: argon2id hashes (argon2-cffi's defaults, RFC 9106's second choice)."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Compared against when the email is unknown, so that a wrong email costs as long as a wrong
# password (no timing oracle for which operators exist).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MIN_LENGTH = 12


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """A one-time password for a new operator (about 128 bits)."""
    return secrets.token_urlsafe(16)
