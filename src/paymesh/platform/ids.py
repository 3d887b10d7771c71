"""Object ids: a prefix and 24 random letters and digits. Not hex: hex makes long digit runs,
which the edge masks in URLs as possible card numbers; not base64url: `-` is not an id
character (paymesh.platform.wire.require_id)."""

from __future__ import annotations

import os
import string

_ALPHABET = string.ascii_letters + string.digits
_UNBIASED = 256 - 256 % len(_ALPHABET)  # bytes from here up would favour the first letters
LENGTH = 24


def new_id(prefix: str) -> str:
    """One read of the system's random source per id (secrets.choice made one per letter:
    several ids are made for every payment)."""
    letters: list[str] = []
    while len(letters) < LENGTH:
        letters += [_ALPHABET[b % len(_ALPHABET)] for b in os.urandom(32) if b < _UNBIASED]
    return prefix + "".join(letters[:LENGTH])
