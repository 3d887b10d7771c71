"""Object ids: a prefix and 24 random letters and digits. Not hex: hex makes long digit runs,
which the edge masks in URLs as possible card numbers; not base64url: `-` is not an id
character (paymesh.platform.wire.require_id)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))
