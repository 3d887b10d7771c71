"""Card validation and brand detection: plain functions, no I/O. Every violation is named by
its field and a Stripe-like reason; the card number itself never appears in a message."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from paymesh.platform.errors import FieldViolation, InvalidArgument
from paymesh.platform.masking import luhn_valid
from paymesh.platform.merchant_input import card_number_violation

_SEPARATORS = re.compile(r"[ -]")
# ASCII digits with spaces or dashes between them: `str.isdigit` would also take "²", "４"
# and "٤", which are no card number (and "²" breaks `int`).
_NUMBER_CHARS = re.compile(r"[0-9 -]*")
_ASCII_DIGITS = re.compile(r"[0-9]*")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
NUMBER_MAX = 30  # 19 digits and separators between them
# C0 and C1 controls, DEL, line and paragraph separators, and the bidirectional controls
# that can make a name or an address read differently from what is stored.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Lengths of the billing strings a tokenization may carry (dotted under billing_details).
BILLING_LIMITS: dict[str, int] = {
    "name": 255,
    "email": 512,
    "address.line1": 255,
    "address.line2": 255,
    "address.city": 100,
    "address.state": 100,
    "address.postal_code": 20,
    "address.country": 2,
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# (brand, IIN prefix ranges as (low, high) on the leading digits), checked in order.
_BRANDS: list[tuple[str, list[tuple[str, str]]]] = [
    ("amex", [("34", "34"), ("37", "37")]),
    ("visa", [("4", "4")]),
    ("mastercard", [("51", "55"), ("2221", "2720")]),
    ("discover", [("6011", "6011"), ("644", "649"), ("65", "65")]),
    ("unionpay", [("62", "62"), ("81", "81")]),
    ("jcb", [("3528", "3589")]),
    ("diners", [("300", "305"), ("309", "309"), ("36", "36"), ("38", "39")]),
]


@dataclass(frozen=True)
class Card:
    number: str
    exp_month: int
    exp_year: int
    cvc: str
    brand: str

    @property
    def last4(self) -> str:
        return self.number[-4:]

    def __repr__(self) -> str:  # keeps the number and CVC out of tracebacks and debug output
        return f"Card(brand={self.brand!r}, last4={self.last4!r})"


def brand_of(number: str) -> str:
    for brand, ranges in _BRANDS:
        for low, high in ranges:
            prefix = number[: len(low)]
            if len(prefix) == len(low) and low <= prefix <= high:
                return brand
    return "unknown"


def _number_violation(raw: str, number: str) -> FieldViolation | None:
    """`number` is `raw` without its separators."""
    if not raw:
        return FieldViolation("card.number", "missing", "the card number is required")
    if len(raw) > NUMBER_MAX or not _NUMBER_CHARS.fullmatch(raw) or not 12 <= len(number) <= 19:
        return FieldViolation(
            "card.number", "invalid_number", "the card number must be 12 to 19 digits"
        )
    if not luhn_valid(number):
        return FieldViolation("card.number", "incorrect_number", "the card number is incorrect")
    return None


def _expiry_violations(month: int, year: int, today: date) -> list[FieldViolation]:
    violations = []
    if not 1 <= month <= 12:
        violations.append(
            FieldViolation("card.exp_month", "invalid_expiry_month", "exp_month must be 1 to 12")
        )
    if not today.year <= year <= today.year + 50:
        violations.append(
            FieldViolation(
                "card.exp_year",
                "invalid_expiry_year",
                "exp_year must be this year or later, and four digits",
            )
        )
    elif year == today.year and 1 <= month < today.month:
        violations.append(
            FieldViolation("card.exp_month", "invalid_expiry_month", "the card has expired")
        )
    return violations


def _cvc_violation(cvc: str, brand: str) -> FieldViolation | None:
    if not cvc:
        return None  # optional: some flows (imported cards) have none
    length = 4 if brand == "amex" else 3
    if len(cvc) != length or not _ASCII_DIGITS.fullmatch(cvc):
        return FieldViolation("card.cvc", "invalid_cvc", f"the CVC must be {length} digits")
    return None


def _billing_strings(billing: Mapping[str, Any]) -> dict[str, str]:
    """The billing strings by dotted path (`address.city`), as BILLING_LIMITS names them."""
    found = {}
    for path in BILLING_LIMITS:
        value: Any = billing
        for part in path.split("."):
            value = value.get(part, "") if isinstance(value, Mapping) else ""
        if value:
            found[path] = str(value)
    return found


def _billing_violations(billing: Mapping[str, Any]) -> list[FieldViolation]:
    violations = []
    for path, value in _billing_strings(billing).items():
        field = f"billing_details.{path}"
        limit = BILLING_LIMITS[path]
        if path == "address.country":
            if not _COUNTRY.fullmatch(value):
                violations.append(
                    FieldViolation(field, "invalid_country", "use a two-letter ISO 3166-1 code")
                )
        elif len(value) > limit:
            violations.append(
                FieldViolation(field, "too_long", f"{field} must be at most {limit} characters")
            )
        elif _CONTROL.search(value):
            violations.append(
                FieldViolation(
                    field, "invalid_characters", f"{field} must be text without control characters"
                )
            )
        elif found := card_number_violation(field, value):
            violations.append(found)
        elif path == "email" and not _EMAIL.match(value):
            violations.append(FieldViolation(field, "invalid_email", "not an email address"))
    return violations


def validate_card(
    *,
    number: str,
    exp_month: int,
    exp_year: int,
    cvc: str,
    today: date,
    payment_type: str = "card",
    billing: Mapping[str, Any] | None = None,
) -> Card:
    """A valid Card, or InvalidArgument listing every violation at once. `billing` is the
    billing details as a JSON-like mapping (`{"name": …, "address": {"city": …}}`)."""
    raw, number = number, _SEPARATORS.sub("", number)
    if 0 < exp_year < 100:
        exp_year += 2000
    violations: list[FieldViolation] = []
    if payment_type not in ("", "card"):
        violations.append(FieldViolation("type", "invalid_type", "only `card` is supported"))
    number_violation = _number_violation(raw, number)
    if number_violation:
        violations.append(number_violation)
    brand = brand_of(number) if number and _ASCII_DIGITS.fullmatch(number) else "unknown"
    violations += _expiry_violations(exp_month, exp_year, today)
    cvc_violation = _cvc_violation(cvc, brand)
    if cvc_violation:
        violations.append(cvc_violation)
    violations += _billing_violations(billing or {})
    if violations:
        raise InvalidArgument(violations)
    return Card(number=number, exp_month=exp_month, exp_year=exp_year, cvc=cvc, brand=brand)
