"""rebill_svc.domain.updates: what a merchant's change to a subscription may say, what it
changes, and when a new card retries the open period now, as plain rules."""

from __future__ import annotations

import pytest

from paymesh.platform.problems import FailedPrecondition, InvalidArgument
from rebill_svc.domain.subscriptions import Status
from rebill_svc.domain.updates import (
    changed_values,
    open_period_attempt,
    retries_now,
    subscription_update,
)

CURRENT = {
    "payment_method": "pm_old",
    "amount": 1500,
    "currency": "usd",
    "metadata": {"plan": "pro"},
}


def change(payment_method=None, amount=None, **metadata):
    return subscription_update(payment_method=payment_method, amount=amount, metadata=metadata)


def fields_of(error: InvalidArgument) -> dict[str, str]:
    return {v.field: v.reason for v in error.violations}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"amount": 0}, {"amount": "invalid_amount"}),
        ({"amount": 100_000_000}, {"amount": "invalid_amount"}),
        ({"payment_method": ""}, {"payment_method": "invalid_payment_method"}),
        ({"payment_method": "card_1"}, {"payment_method": "invalid_payment_method"}),
        (
            {"payment_method": "x", "amount": -1},
            {"payment_method": "invalid_payment_method", "amount": "invalid_amount"},
        ),
    ],
)
def test_every_bad_field_is_named(fields, expected):
    with pytest.raises(InvalidArgument) as raised:
        subscription_update(**{"payment_method": None, "amount": None, "metadata": {}, **fields})
    assert fields_of(raised.value) == expected


def test_metadata_keys_are_checked_as_at_creation():
    with pytest.raises(InvalidArgument) as raised:
        subscription_update(payment_method=None, amount=None, metadata={"k" * 41: "v"})
    assert fields_of(raised.value) == {"metadata." + "k" * 40: "invalid_metadata"}


def test_only_what_differs_is_changed_and_an_empty_value_removes_a_key():
    values = changed_values("active", CURRENT, change("pm_old", 1600, plan="", seats="5"))
    assert values == {"amount": 1600, "metadata": {"seats": "5"}}
    assert changed_values("active", CURRENT, change(amount=1500, plan="pro")) == {}


def test_a_new_amount_follows_the_subscriptions_currency():
    """bhd has 3 decimals, which card networks settle to 2: its amounts end in 0."""
    in_bhd = {**CURRENT, "currency": "bhd"}
    assert changed_values("active", in_bhd, change(amount=2500)) == {"amount": 2500}
    with pytest.raises(InvalidArgument) as raised:
        changed_values("active", in_bhd, change(amount=2505))
    assert fields_of(raised.value) == {"amount": "invalid_amount"}


def test_metadata_is_limited_to_50_pairs_once_merged():
    with pytest.raises(InvalidArgument) as raised:
        changed_values("active", CURRENT, change(**{f"k{n}": "v" for n in range(50)}))
    assert fields_of(raised.value) == {"metadata": "too_many_keys"}
    fifty = changed_values("active", CURRENT, change(**{f"k{n}": "v" for n in range(49)}))
    assert len(fifty["metadata"]) == 50


def test_a_canceled_subscription_is_not_updated():
    with pytest.raises(FailedPrecondition) as raised:
        changed_values("canceled", CURRENT, change(amount=1600))
    assert raised.value.reason == "subscription_canceled"
    assert "canceled" in str(raised.value)


@pytest.mark.parametrize("status", list(Status))
def test_only_a_card_given_to_a_past_due_or_unpaid_subscription_retries_now(status):
    rescuable = status in (Status.PAST_DUE, Status.UNPAID)
    assert retries_now(status, change("pm_new")) == rescuable
    assert not retries_now(status, change(amount=1600, note="x"))


@pytest.mark.parametrize(
    ("job_status", "attempt_runs", "expected"),
    [
        ("scheduled", 0, 3),  # the next retry, not started: it runs now instead of later
        ("queued", 0, 3),  # handed to a worker that has not started it
        ("failed", 0, 4),  # given up: a new attempt after the last
        ("queued", 1, None),  # a re-run waits: the attempt may have charged
        ("running", 1, None),  # at the PSP, or its outcome unknown
        ("succeeded", 1, None),  # paid
    ],
)
def test_the_open_period_runs_a_new_attempt_only_if_none_is_started(
    job_status, attempt_runs, expected
):
    assert open_period_attempt(job_status, 3, attempt_runs) == expected
