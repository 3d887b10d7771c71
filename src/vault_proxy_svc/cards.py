"""Card validation and brand detection: plain functions, no I/O. Every violation is named by
its field and a Stripe-like reason; the card number itself never appears in a message."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from paymesh.platform.errors import FieldViolation, InvalidArgument

_SEPARATORS = re.compile(r"[ -]")
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


def luhn_valid(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _number_violation(number: str) -> FieldViolation | None:
    if not number:
        return FieldViolation("card.number", "missing", "the card number is required")
    if not number.isdigit() or not 12 <= len(number) <= 19:
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
    if not cvc.isdigit() or len(cvc) != length:
        return FieldViolation("card.cvc", "invalid_cvc", f"the CVC must be {length} digits")
    return None


def _billing_violations(email: str, country: str) -> list[FieldViolation]:
    violations = []
    if email and not _EMAIL.match(email):
        violations.append(
            FieldViolation("billing_details.email", "invalid_email", "not an email address")
        )
    if country and not (len(country) == 2 and country.isalpha()):
        violations.append(
            FieldViolation(
                "billing_details.address.country",
                "invalid_country",
                "use a two-letter ISO 3166-1 code",
            )
        )
    return violations


def validate_card(
    *,
    number: str,
    exp_month: int,
    exp_year: int,
    cvc: str,
    today: date,
    payment_type: str = "card",
    email: str = "",
    country: str = "",
) -> Card:
    """A valid Card, or InvalidArgument listing every violation at once."""
    number = _SEPARATORS.sub("", number)
    if 0 < exp_year < 100:
        exp_year += 2000
    violations: list[FieldViolation] = []
    if payment_type not in ("", "card"):
        violations.append(FieldViolation("type", "invalid_type", "only `card` is supported"))
    number_violation = _number_violation(number)
    if number_violation:
        violations.append(number_violation)
    brand = brand_of(number) if number.isdigit() else "unknown"
    violations += _expiry_violations(exp_month, exp_year, today)
    cvc_violation = _cvc_violation(cvc, brand)
    if cvc_violation:
        violations.append(cvc_violation)
    violations += _billing_violations(email, country)
    if violations:
        raise InvalidArgument(violations)
    return Card(number=number, exp_month=exp_month, exp_year=exp_year, cvc=cvc, brand=brand)
