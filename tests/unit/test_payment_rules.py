"""The payment rules as plain functions: validation, every (status, action) pair of the
transition table, capture and refund amounts."""

from __future__ import annotations

import pytest

from gateway_svc.domain import validation as rules
from gateway_svc.domain.status import TRANSITIONS, Action, IntentStatus, move, sources
from gateway_svc.domain.validation import validate_new_intent
from paymesh.platform.merchant_input import minor_units
from paymesh.platform.problems import FailedPrecondition, InvalidArgument

S, A = IntentStatus, Action
# Every legal move, written out by hand: the table in the code must say exactly this.
LEGAL = {
    (S.REQUIRES_PAYMENT_METHOD, A.CONFIRM): S.PROCESSING,
    (S.REQUIRES_CONFIRMATION, A.CONFIRM): S.PROCESSING,
    (S.PROCESSING, A.AUTHORIZED): S.REQUIRES_CAPTURE,
    (S.PROCESSING, A.CHARGED): S.SUCCEEDED,
    # A late authorization of a given-up attempt is adopted while nothing else happened.
    (S.REQUIRES_CONFIRMATION, A.AUTHORIZED): S.REQUIRES_CAPTURE,
    (S.REQUIRES_CONFIRMATION, A.CHARGED): S.SUCCEEDED,
    (S.REQUIRES_PAYMENT_METHOD, A.AUTHORIZED): S.REQUIRES_CAPTURE,
    (S.REQUIRES_PAYMENT_METHOD, A.CHARGED): S.SUCCEEDED,
    (S.PROCESSING, A.DECLINED): S.REQUIRES_PAYMENT_METHOD,
    # The PSP needs the customer (3-D Secure); a late answer of a given-up attempt is adopted
    # like a late authorization.
    (S.PROCESSING, A.ACTION_REQUIRED): S.REQUIRES_ACTION,
    (S.REQUIRES_CONFIRMATION, A.ACTION_REQUIRED): S.REQUIRES_ACTION,
    (S.REQUIRES_PAYMENT_METHOD, A.ACTION_REQUIRED): S.REQUIRES_ACTION,
    # How the customer's authentication ended, as the PSP tells (never a capture of it).
    (S.REQUIRES_ACTION, A.AUTHORIZED): S.REQUIRES_CAPTURE,
    (S.REQUIRES_ACTION, A.CHARGED): S.SUCCEEDED,
    (S.REQUIRES_ACTION, A.DECLINED): S.REQUIRES_PAYMENT_METHOD,
    (S.REQUIRES_ACTION, A.CANCEL): S.CANCELED,
    (S.PROCESSING, A.NOT_PROCESSED): S.REQUIRES_CONFIRMATION,
    (S.REQUIRES_CAPTURE, A.CAPTURE): S.SUCCEEDED,
    (S.REQUIRES_PAYMENT_METHOD, A.CANCEL): S.CANCELED,
    (S.REQUIRES_CONFIRMATION, A.CANCEL): S.CANCELED,
    (S.REQUIRES_CAPTURE, A.CANCEL): S.CANCELED,
    (S.SUCCEEDED, A.REFUND): S.SUCCEEDED,
}


def validate(**overrides):
    fields = {
        "amount": 1000,
        "currency": "usd",
        "capture_method": "",
        "confirm": False,
        "payment_method": "",
        "description": "",
        "metadata": {},
    }
    rules.validate_new_intent(**{**fields, **overrides})


def test_a_plain_intent_is_valid_and_the_bounds_are_inclusive():
    validate()
    validate(amount=1)
    validate(amount=rules.MAX_AMOUNT)
    validate(metadata={"k" * 40: "v" * 500})
    validate(description="d" * rules.DESCRIPTION_MAX)
    validate(payment_method="pm_" + "a" * 37)


def test_every_problem_is_reported_at_once():
    with pytest.raises(InvalidArgument) as raised:
        validate(amount=0, currency="EUR", capture_method="soon", confirm=True)

    assert {(v.field, v.reason) for v in raised.value.violations} == {
        ("amount", "invalid_amount"),
        ("currency", "invalid_currency"),
        ("capture_method", "invalid_capture_method"),
        ("payment_method", "missing"),
    }


@pytest.mark.parametrize(("status", "action"), [(status, action) for status in S for action in A])
def test_every_status_and_action_pair_moves_as_the_table_says_or_is_refused(status, action):
    if (status, action) in LEGAL:
        assert move("pi_1", status, action) == LEGAL[status, action]
        assert status in sources(action)
        return
    with pytest.raises(FailedPrecondition) as raised:
        move("pi_1", status, action)
    assert raised.value.reason == "payment_intent_unexpected_state"
    assert raised.value.metadata == {"status": status}
    assert status not in sources(action)


def test_the_table_has_no_move_the_test_does_not_know():
    written = {(s, a): t for a, moves in TRANSITIONS.items() for s, t in moves.items()}
    assert written == LEGAL


@pytest.mark.parametrize(
    ("return_url", "confirm", "reason"),
    [
        ("https://shop.example/orders/1?back=1", True, None),
        ("http://localhost:3000/back", True, None),
        ("https://shop.example/back", False, "needs_confirm"),
        ("/relative/back", True, "invalid_url"),
        ("javascript:alert(1)", True, "invalid_url"),
        ("https://shop.example/a b", True, "invalid_url"),
        ("https://shop.example/" + "x" * rules.RETURN_URL_MAX, True, "invalid_url"),
        ("https://shop.example/?card=4242424242424242", True, "card_number_in_free_text"),
    ],
)
def test_a_return_url_is_an_absolute_web_address_given_with_confirm(return_url, confirm, reason):
    fields = {"return_url": return_url, "confirm": confirm, "payment_method": "pm_1"}
    if reason is None:
        validate(**fields)
        return
    with pytest.raises(InvalidArgument) as raised:
        validate(**fields)
    assert [(v.field, v.reason) for v in raised.value.violations] == [("return_url", reason)]


def test_capture_takes_all_unless_less_is_asked_and_never_more():
    assert rules.capture_amount(0, 700, "usd") == 700
    assert rules.capture_amount(300, 700, "usd") == 300
    with pytest.raises(InvalidArgument):
        rules.capture_amount(701, 700, "usd")


def test_refunds_never_exceed_what_was_captured():
    assert rules.refund_amount(0, received=600, refunded=250, reason="") == 350
    assert rules.refund_amount(100, received=600, refunded=250, reason="duplicate") == 100
    with pytest.raises(InvalidArgument):
        rules.refund_amount(351, received=600, refunded=250, reason="")
    with pytest.raises(InvalidArgument):
        rules.refund_amount(10, received=600, refunded=0, reason="changed_my_mind")
    with pytest.raises(FailedPrecondition) as raised:
        rules.refund_amount(0, received=600, refunded=600, reason="")
    assert raised.value.reason == "charge_already_refunded"


def test_a_fully_refunded_payment_says_so_whatever_amount_is_asked():
    """Not `invalid_amount` "amount must be from 1 to 0": the README's table says
    `charge_already_refunded`."""
    for requested in (0, 1, 600):
        with pytest.raises(FailedPrecondition) as raised:
            rules.refund_amount(requested, received=600, refunded=600, reason="")
        assert raised.value.reason == "charge_already_refunded"


def test_an_intent_waiting_for_its_customer_is_never_captured_confirmed_anew_or_refunded():
    for action in (A.CAPTURE, A.CONFIRM, A.REFUND, A.NOT_PROCESSED):
        with pytest.raises(FailedPrecondition) as raised:
            move("pi_1", "requires_action", action)
        assert raised.value.reason == "payment_intent_unexpected_state"
        assert "requires_action" not in sources(action)


def test_amounts_follow_the_currencys_minor_units():
    """ISO 4217: usd has 2 decimals, jpy none, bhd 3. An amount is always in the smallest unit
    (jpy 500 is ¥500, bhd 1500 is 1.500 BHD); card networks settle 3-decimal currencies to 2
    decimals, so their amounts end in 0 (as Stripe requires)."""
    assert minor_units("usd") == 2 and minor_units("jpy") == 0 and minor_units("bhd") == 3
    base = {
        "capture_method": "",
        "confirm": False,
        "payment_method": "",
        "description": "",
        "metadata": {},
    }
    for currency, amount in (("usd", 505), ("jpy", 505), ("bhd", 500), ("kwd", 1990)):
        validate_new_intent(amount=amount, currency=currency, **base)
    for currency, amount in (("bhd", 505), ("kwd", 1999), ("omr", 1)):
        with pytest.raises(InvalidArgument) as raised:
            validate_new_intent(amount=amount, currency=currency, **base)
        [violation] = raised.value.violations
        assert (violation.field, violation.reason) == ("amount", "invalid_amount")
        assert "3 decimals" in violation.description
    with pytest.raises(InvalidArgument):
        rules.capture_amount(1005, 2000, "bhd")
    assert rules.capture_amount(1000, 2000, "bhd") == 1000
    assert rules.capture_amount(1005, 2000, "usd") == 1005
