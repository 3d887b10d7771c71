"""The vault's input rules as plain functions: card numbers are ASCII digits only, every
string of a tokenization has a length limit and no control characters, and ids have a shape."""

from __future__ import annotations

from datetime import date

import pytest

from paymesh.platform.errors import InvalidArgument, NotFound
from paymesh.platform.wire import require_id
from tests.support import cards
from vault_proxy_svc.cards import BILLING_LIMITS, validate_card

TODAY = date(2026, 11, 24)


def violations(**overrides) -> dict[str, str]:
    fields = {"number": cards.VISA, "exp_month": 12, "exp_year": 2027, "cvc": "123"}
    fields.update(overrides)
    with pytest.raises(InvalidArgument) as raised:
        validate_card(today=TODAY, **fields)
    return {v.field: v.reason for v in raised.value.violations}


@pytest.mark.parametrize(
    "number",
    [
        "424242424242424²",  # a superscript two: isdigit(), but int() fails
        "４２４２４２４２４２４２４２４２",  # full-width digits
        "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",  # Arabic-Indic digits
        "۴۲۴۲۴۲۴۲۴۲۴۲۴۲۴۲",  # extended Arabic-Indic (Persian) digits
        "4242\u00a04242\u00a04242\u00a04242",  # a no-break space is not a separator
        "4242_4242_4242_4242",
        "4242\t4242\t4242\t4242",
        "4242424242424242\x00",
        " " * 40 + cards.VISA,  # padding: the raw number has a length limit too
    ],
)
def test_a_card_number_is_ascii_digits_with_spaces_or_dashes_only(number):
    assert violations(number=number) == {"card.number": "invalid_number"}


@pytest.mark.parametrize("cvc", ["１２３", "١٢٣", "12³", "12\x00"])
def test_a_cvc_is_ascii_digits_only(cvc):
    assert violations(cvc=cvc) == {"card.cvc": "invalid_cvc"}


def test_the_number_is_never_in_a_violation():
    with pytest.raises(InvalidArgument) as raised:
        validate_card(today=TODAY, number="٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", exp_month=12, exp_year=2027, cvc="")
    text = repr(raised.value.violations) + str(raised.value)
    assert "٤٢٤٢" not in text


def _nested(path: str, value: str) -> dict:
    """`address.city`, "x" → {"address": {"city": "x"}}."""
    head, _, rest = path.partition(".")
    return {head: _nested(rest, value) if rest else value}


@pytest.mark.parametrize(("field", "limit"), sorted(BILLING_LIMITS.items()))
def test_each_billing_string_has_a_length_limit(field, limit):
    at_limit = "a@b.co".rjust(limit, "a") if field == "email" else "a" * limit
    if field == "address.country":
        at_limit = "FR"
    validate_card(
        today=TODAY,
        number=cards.VISA,
        exp_month=12,
        exp_year=2027,
        cvc="123",
        billing=_nested(field, at_limit),
    )

    over = "a" * (limit - 5) + "@b.com" if field == "email" else "a" * (limit + 1)
    reason = "invalid_country" if field == "address.country" else "too_long"
    assert violations(billing=_nested(field, over)) == {f"billing_details.{field}": reason}


@pytest.mark.parametrize("field", sorted(BILLING_LIMITS))
@pytest.mark.parametrize("bad", ["\x00", "\n", "\t", "\x7f", "\x85", "\u202e"])
def test_control_and_bidi_characters_are_refused_in_billing_strings(field, bad):
    value = f"x{bad}y"
    found = violations(billing=_nested(field, value))
    if field == "address.country":
        assert found == {"billing_details.address.country": "invalid_country"}
    else:
        assert found == {f"billing_details.{field}": "invalid_characters"}


def test_accented_names_and_addresses_are_fine():
    card = validate_card(
        today=TODAY,
        number=cards.VISA,
        exp_month=12,
        exp_year=2027,
        cvc="123",
        billing={
            "name": "Zoë Ångström-Łukasiewicz",
            "email": "zoe@example.com",
            "address": {"line1": "Straße 1", "city": "Zürich", "country": "CH"},
        },
    )
    assert card.last4 == "4242"


@pytest.mark.parametrize("country", ["ÄÖ", "fr1", "F", "FRA"])
def test_a_country_is_two_ascii_letters(country):
    assert violations(billing={"address": {"country": country}}) == {
        "billing_details.address.country": "invalid_country"
    }


def test_every_violation_is_reported_at_once():
    found = violations(
        number="４２４２４２４２４２４２４２４２",
        billing={"name": "n" * 1000, "email": "x\x00@y.z", "address": {"line2": "l" * 1000}},
    )
    assert found == {
        "card.number": "invalid_number",
        "billing_details.name": "too_long",
        "billing_details.email": "invalid_characters",
        "billing_details.address.line2": "too_long",
    }


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("pm_" + "a" * 38, "too_long"),  # longer than any id can be
        ("4242424242424242" * 3, "too_long"),
        ("pm_abc\x00def", "invalid_characters"),
        ("pm_abcdéf", "invalid_characters"),
        ("pm_２４", "invalid_characters"),
        ("pm_abc def", "invalid_characters"),
        ("pm_abc/def", "invalid_characters"),
        ("pm_" + "\ufffd", "invalid_characters"),
        ("4242-4242-4242-4242", "invalid_characters"),
    ],
)
def test_an_id_of_bad_shape_is_a_400_naming_the_field_without_echoing_it(value, reason):
    with pytest.raises(InvalidArgument) as raised:
        require_id(value, "pm_", "payment_method", "payment_method")
    [violation] = raised.value.violations
    assert violation.field == "payment_method"
    assert violation.reason == reason
    text = f"{raised.value} {violation.description}"
    assert value not in text and value[3:] not in text


@pytest.mark.parametrize("value", [cards.VISA, "pi_abc", "pm"])
def test_an_id_of_another_kind_is_not_found_and_not_echoed(value):
    with pytest.raises(NotFound) as raised:
        require_id(value, "pm_", "payment_method")
    assert value not in str(raised.value)


def test_an_id_of_our_shape_passes():
    assert require_id("pm_" + "A1b2" * 6, "pm_", "payment_method") == "pm_" + "A1b2" * 6
