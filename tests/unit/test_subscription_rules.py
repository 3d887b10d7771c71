"""rebill_svc.domain.subscriptions: how a subscription starts, resumes, and what an attempt's
outcome does to it, as plain rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paymesh.platform.problems import FailedPrecondition, InvalidArgument
from rebill_svc.domain.dunning import (
    AwaitCustomer,
    FinalStatus,
    GiveUp,
    Paid,
    RetryAt,
    WaitForOutcome,
)
from rebill_svc.domain.periods import Interval
from rebill_svc.domain.subscriptions import (
    Periods,
    Plan,
    Status,
    after_attempt,
    cancelable,
    new_subscription,
    pausable,
    resumable,
    resumed_periods,
)

NOW = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
VALID = {
    "payment_method": "pm_abc",
    "amount": 1500,
    "currency": "usd",
    "interval": "month",
    "interval_count": 0,
    "anchor": None,
    "trial_end": None,
    "metadata": {},
    "now": NOW,
}


def fields_of(error: InvalidArgument) -> set[str]:
    return {v.field for v in error.violations}


def test_without_trial_or_anchor_the_first_period_starts_now_and_is_charged_now():
    new = new_subscription(**VALID)
    assert new.charge_now
    assert new.status == Status.INCOMPLETE
    assert new.interval_count == 1
    assert new.current == Periods(0, NOW, datetime(2027, 2, 28, 9, 30, tzinfo=UTC))


def test_a_trial_defers_the_first_period_to_its_end():
    trial_end = NOW + timedelta(days=14)
    new = new_subscription(**{**VALID, "trial_end": trial_end})
    assert not new.charge_now
    assert new.status == Status.TRIALING
    assert new.anchor == trial_end
    assert new.current == Periods(-1, NOW, trial_end)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"payment_method": ""}, "payment_method"),
        ({"payment_method": "card_123"}, "payment_method"),
        ({"amount": 0}, "amount"),
        ({"amount": 100_000_000}, "amount"),
        ({"amount": 1505, "currency": "bhd"}, "amount"),  # 3 decimals, settled to 2
        ({"currency": "USD"}, "currency"),
        ({"interval": "fortnight"}, "interval"),
        ({"interval": "week", "interval_count": 53}, "interval_count"),
        ({"trial_end": NOW}, "trial_end"),
        ({"trial_end": NOW + timedelta(days=731)}, "trial_end"),
        ({"anchor": NOW - timedelta(seconds=1)}, "billing_cycle_anchor"),
        (
            {"trial_end": NOW + timedelta(days=5), "anchor": NOW + timedelta(days=4)},
            "billing_cycle_anchor",
        ),
        ({"metadata": {"": "x"}}, "metadata."),
    ],
)
def test_bad_input_names_its_field(change, field):
    with pytest.raises(InvalidArgument) as raised:
        new_subscription(**{**VALID, **change})
    assert field in fields_of(raised.value)


def test_every_bad_field_is_named_at_once():
    with pytest.raises(InvalidArgument) as raised:
        new_subscription(**{**VALID, "amount": -1, "currency": "xx", "interval": "hour"})
    assert fields_of(raised.value) == {"amount", "currency", "interval"}


def test_resuming_skips_the_periods_that_passed_while_paused():
    plan = Plan(Interval.MONTH, 1, datetime(2027, 1, 31, tzinfo=UTC))
    current = Periods(0, datetime(2027, 1, 31, tzinfo=UTC), datetime(2027, 2, 28, tzinfo=UTC))
    resumed = resumed_periods(plan, current, datetime(2027, 5, 2, tzinfo=UTC))
    assert resumed == Periods(
        3, datetime(2027, 4, 30, tzinfo=UTC), datetime(2027, 5, 31, tzinfo=UTC)
    )
    assert resumed_periods(plan, current, datetime(2027, 2, 1, tzinfo=UTC)) == current


@pytest.mark.parametrize(
    ("step", "status", "job", "subscription"),
    [
        (Paid(), "past_due", "succeeded", Status.ACTIVE),
        (Paid(), "incomplete", "succeeded", Status.ACTIVE),
        (Paid(), "canceled", "succeeded", None),  # a late success does not revive it
        (WaitForOutcome(), "active", "running", None),
        # A renewal that needs the customer: the merchant is told; the subscription stays.
        (AwaitCustomer(), "active", "requires_action", None),
        (AwaitCustomer(), "past_due", "requires_action", None),
        (RetryAt(2, NOW), "active", "scheduled", Status.PAST_DUE),
        (RetryAt(2, NOW), "paused", "failed", None),
        (GiveUp(FinalStatus.UNPAID), "past_due", "failed", Status.UNPAID),
        (GiveUp(FinalStatus.CANCELED), "past_due", "failed", Status.CANCELED),
        (GiveUp(FinalStatus.CANCELED), "canceled", "failed", None),
    ],
)
def test_what_an_attempts_outcome_does(step, status, job, subscription):
    after = after_attempt(step, status)
    assert (after.job_status, after.subscription_status) == (job, subscription)


def test_a_retry_carries_its_attempt_and_time():
    after = after_attempt(RetryAt(3, NOW), "past_due")
    assert (after.next_attempt, after.next_attempt_at) == (3, NOW)


def test_state_changes_a_status_does_not_allow_are_refused():
    with pytest.raises(FailedPrecondition):
        pausable("past_due")
    with pytest.raises(FailedPrecondition):
        resumable("active")
    with pytest.raises(FailedPrecondition):
        cancelable("canceled")
    pausable("trialing")
    resumable("paused")
    cancelable("unpaid")
