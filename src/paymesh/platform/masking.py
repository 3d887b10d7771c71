"""Keeps secrets and card data out of logs: a secret shows its last 4 characters only."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEYS = frozenset(
    {"authorization", "api_key", "secret", "secret_key", "password", "token", "card_number"}
)
# 12-19 digits, optionally grouped by spaces or dashes: anything shaped like a PAN.
_PAN_LIKE = re.compile(r"\b(?:\d[ -]?){11,18}\d\b")


def last4(secret: str | None) -> str:
    if not secret:
        return ""
    return "…" + secret[-4:]


def redact_pans(text: str) -> str:
    return _PAN_LIKE.sub("[redacted]", text)


def mask_event(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: masks secret-named keys and PAN-shaped digits in strings."""
    for key, value in event.items():
        if key in SECRET_KEYS and isinstance(value, str):
            event[key] = last4(value)
        elif isinstance(value, str):
            event[key] = redact_pans(value)
    return event
