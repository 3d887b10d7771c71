"""A card number typed into a free-text field (a description, metadata, a cardholder's name)
is found, so that services refuse it instead of storing it in clear; ordinary text, phone
numbers, dates, amounts and ids are left alone. A 12-19 digit order number that happens to
pass Luhn is refused too, on purpose: nothing tells it from a card number."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_svc.domain.validation import validate_new_intent
from paymesh.platform.masking import contains_card_number, luhn_valid
from paymesh.platform.merchant_input import card_number_violation, metadata_violations
from paymesh.platform.problems import InvalidArgument
from vault_proxy_svc.cards import validate_card
from webhook_svc.domain.rules import description_violation


def with_check_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


card_numbers = (
    st.tuples(
        st.integers(1, 9),
        st.lists(st.integers(0, 9), min_size=10, max_size=17),
    )
    .map(lambda t: with_check_digit(str(t[0]) + "".join(map(str, t[1]))))
    .filter(lambda n: len(set(n)) > 1)  # one repeated digit is padding, not a card
)


@given(
    number=card_numbers,
    separators=st.lists(st.sampled_from(["", "", " ", "-"]), min_size=18, max_size=18),
    before=st.sampled_from(["", "card ", "note: ", "x"]),
    after=st.sampled_from(["", " thanks", ".", "\n"]),
)
def test_any_luhn_valid_run_of_12_to_19_digits_is_found_however_grouped(
    number, separators, before, after
):
    grouped = number[0] + "".join(s + d for s, d in zip(separators, number[1:], strict=False))

    assert contains_card_number(before + grouped + after)


@given(text=st.text(alphabet=st.characters(exclude_categories=["Nd"]), max_size=200))
def test_text_without_digits_is_never_a_card_number(text):
    assert not contains_card_number(text)


def test_ordinary_text_phone_numbers_ids_dates_and_amounts_are_not_card_numbers():
    for text in [
        "Order #10023 for Jane Doe, 3 items",
        "+1 (555) 123-4567",
        "+44 20 7946 0958",
        "2026-12-07T10:16:08Z",
        "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "amount 1999 usd",
        "4242 4242 4242 4241",  # fails Luhn
        "42424242424242424242",  # 20 digits: longer than any card number
        "000000000000",  # padding
        "4242  4242  4242  4242",  # double separators
        "",
    ]:
        assert not contains_card_number(text), text


def test_card_numbers_in_other_scripts_and_12_digit_luhn_order_numbers_are_found():
    assert contains_card_number("４２４２４２４２４２４２４２４２")  # full-width
    assert contains_card_number("order 100000000008")  # passes Luhn: refused, as documented


def test_the_violation_names_the_field_and_never_the_number():
    violation = card_number_violation("description", "pay with 4242-4242-4242-4242 please")

    assert violation is not None
    assert violation.field == "description"
    assert violation.reason == "card_number_in_free_text"
    assert "4242" not in violation.description
    assert card_number_violation("description", "ten apples") is None


def test_metadata_keys_and_values_are_checked_and_a_key_is_named_masked():
    found = metadata_violations({"order_note": "card 5555555555554444", "ok": "fine"})
    by_key = metadata_violations({"4242424242424242": "x"})

    assert [(v.field, v.reason) for v in found] == [
        ("metadata.order_note", "card_number_in_free_text")
    ]
    [key] = by_key
    assert key.reason == "card_number_in_free_text"
    assert "4242424242424242" not in key.field
    assert key.field.startswith("metadata.")


def test_a_long_key_holding_a_card_number_is_named_masked_not_cut():
    [violation] = metadata_violations({"x" * 30 + "4242424242424242": "v"})

    assert violation.reason == "card_number_in_free_text"
    assert "424242424242" not in violation.field


def test_each_services_rules_refuse_a_card_number_in_their_free_text():
    with pytest.raises(InvalidArgument) as intent:
        validate_new_intent(
            amount=100,
            currency="usd",
            capture_method="",
            confirm=False,
            payment_method="",
            description="4242 4242 4242 4242",
            metadata={},
        )
    with pytest.raises(InvalidArgument) as card:
        validate_card(
            number="4242424242424242",
            exp_month=12,
            exp_year=date.today().year + 1,
            cvc="123",
            today=date.today(),
            billing={"address": {"line2": "5555555555554444"}},
        )
    hook = description_violation("4000-0000-0000-0002")

    assert [(v.field, v.reason) for v in intent.value.violations] == [
        ("description", "card_number_in_free_text")
    ]
    assert [(v.field, v.reason) for v in card.value.violations] == [
        ("billing_details.address.line2", "card_number_in_free_text")
    ]
    assert hook is not None and hook.reason == "card_number_in_free_text"
