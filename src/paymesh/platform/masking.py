"""Keeps secrets and card data out of logs: a secret shows its last 4 characters only, and a
card number anywhere in a string shows its last 4 digits only.

A card number is what Envoy's edge filter (envoy/edge.lua) masks too: 12 to 19 digits (of any
script: full-width ones too), single spaces or dashes between them, not starting with 0 nor
one digit repeated, passing the Luhn check. Other digits (request ids, amounts, timestamps)
stay as they are, so that logs can still be searched by them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import MutableMapping
from typing import Any

SECRET_KEYS = frozenset(
    {"authorization", "api_key", "secret", "secret_key", "password", "token", "card_number"}
)
# A run of 12 or more digits with single separators (shorter runs are never card numbers, and
# matching only these keeps the check off the ids and timestamps of every log line); whether
# it is a card number is decided below.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d){11,}")


def last4(secret: str | None) -> str:
    if not secret:
        return ""
    return "…" + secret[-4:]


def luhn_valid(digits: str) -> bool:
    """The check digit of a card number (ASCII digits) is right."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card_digits(run: str) -> str | None:
    """The digits of a run of `_DIGIT_RUN` when they are a card number, else None."""
    digits = "".join(str(unicodedata.digit(c)) for c in run if c not in " -")
    if 12 <= len(digits) <= 19 and digits[0] != "0" and len(set(digits)) > 1 and luhn_valid(digits):
        return digits
    return None


def _mask(match: re.Match[str]) -> str:
    digits = _card_digits(match.group())
    return "*" * (len(digits) - 4) + digits[-4:] if digits else match.group()


def redact_pans(text: str) -> str:
    return _DIGIT_RUN.sub(_mask, text)


def contains_card_number(text: str) -> bool:
    """Whether `text` holds a card number, as `redact_pans` would mask it: the one test of
    free text (descriptions, metadata, names) that services refuse to store."""
    return any(_card_digits(run.group()) for run in _DIGIT_RUN.finditer(text))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return redact_pans(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


def mask_event(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: masks secret-named keys, and card numbers in every string."""
    for key, value in event.items():
        if key in SECRET_KEYS and isinstance(value, str):
            event[key] = last4(value)
        else:
            event[key] = _masked(value)
    return event
