"""Card validation and brand detection, as plain functions with a fixed `today`."""

from __future__ import annotations

from datetime import date

import pytest

from paymesh.platform.errors import InvalidArgument
from paymesh.platform.masking import luhn_valid
from tests.support import cards
from vault_proxy_svc.cards import brand_of, validate_card

TODAY = date(2026, 11, 24)


def validate(**overrides):
    fields = {"number": cards.VISA, "exp_month": 12, "exp_year": 2027, "cvc": "123"}
    fields.update(overrides)
    return validate_card(today=TODAY, **fields)


def reasons(error: InvalidArgument) -> dict[str, str]:
    return {v.field: v.reason for v in error.violations}


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4111111111111111", "visa"),
        ("5105105105105100", "mastercard"),
        ("2221000000000009", "mastercard"),
        ("2720999999999996", "mastercard"),
        ("371449635398431", "amex"),
        ("6011000990139424", "discover"),
        ("6445644564456445", "discover"),
        ("6500000000000002", "discover"),
        ("3530111333300000", "jcb"),
        ("30569309025904", "diners"),
        ("38520000023237", "diners"),
        ("6200000000000005", "unionpay"),
        ("1234567890123452", "unknown"),
    ],
)
def test_brands_follow_the_iin_ranges(number, brand):
    assert brand_of(number) == brand


def test_luhn_accepts_test_cards_and_rejects_a_changed_digit():
    assert all(luhn_valid(n) for n in (cards.VISA, cards.AMEX, cards.DINERS))
    assert not luhn_valid(cards.LUHN_FAILURE)


def test_spaces_and_dashes_are_ignored_and_two_digit_years_are_this_century():
    card = validate(number="4242 4242-4242 4242", exp_year=27)

    assert card.number == cards.VISA
    assert card.exp_year == 2027
    assert card.last4 == "4242"


def test_a_card_expiring_this_month_is_valid_but_last_month_is_not():
    assert validate(exp_month=11, exp_year=2026).exp_month == 11
    with pytest.raises(InvalidArgument) as raised:
        validate(exp_month=10, exp_year=2026)
    assert reasons(raised.value) == {"card.exp_month": "invalid_expiry_month"}


def test_years_too_far_ahead_are_invalid():
    with pytest.raises(InvalidArgument) as raised:
        validate(exp_year=2077)
    assert reasons(raised.value) == {"card.exp_year": "invalid_expiry_year"}


def test_cvc_is_optional_but_must_fit_the_brand_when_given():
    assert validate(cvc="").cvc == ""
    assert validate(number=cards.AMEX, cvc="1234").brand == "amex"
    with pytest.raises(InvalidArgument):
        validate(number=cards.AMEX, cvc="123")


def test_no_message_or_repr_carries_the_number():
    with pytest.raises(InvalidArgument) as raised:
        validate(number=cards.LUHN_FAILURE, exp_month=13)
    text = str(raised.value) + "".join(v.description for v in raised.value.violations)
    assert cards.LUHN_FAILURE not in text
    assert cards.VISA not in repr(validate())
