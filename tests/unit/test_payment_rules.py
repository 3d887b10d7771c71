"""The payment rules as plain functions: validation, transitions, capture and refund amounts."""

from __future__ import annotations

import pytest

from gateway_svc import rules
from paymesh.platform.errors import FailedPrecondition, InvalidArgument


def validate(**overrides):
    fields = {
        "amount": 1000,
        "currency": "usd",
        "capture_method": "",
        "confirm": False,
        "payment_method": "",
        "metadata": {},
    }
    rules.validate_new_intent(**{**fields, **overrides})


def test_a_plain_intent_is_valid_and_the_bounds_are_inclusive():
    validate()
    validate(amount=1)
    validate(amount=rules.MAX_AMOUNT)
    validate(metadata={"k" * 40: "v" * 500})


def test_every_problem_is_reported_at_once():
    with pytest.raises(InvalidArgument) as raised:
        validate(amount=0, currency="EUR", capture_method="soon", confirm=True)

    assert {(v.field, v.reason) for v in raised.value.violations} == {
        ("amount", "invalid_amount"),
        ("currency", "invalid_currency"),
        ("capture_method", "invalid_capture_method"),
        ("payment_method", "missing"),
    }


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ("succeeded", rules.CAPTURABLE),
        ("canceled", rules.CANCELABLE),
        ("processing", rules.CONFIRMABLE),
        ("requires_capture", rules.CONFIRMABLE),
    ],
)
def test_a_step_the_status_does_not_allow_names_the_status(status, allowed):
    with pytest.raises(FailedPrecondition) as raised:
        rules.require_status("pi_1", status, allowed, "do that to")

    assert raised.value.reason == "payment_intent_unexpected_state"
    assert raised.value.metadata == {"status": status}


def test_capture_takes_all_unless_less_is_asked_and_never_more():
    assert rules.capture_amount(0, 700) == 700
    assert rules.capture_amount(300, 700) == 300
    with pytest.raises(InvalidArgument):
        rules.capture_amount(701, 700)


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
