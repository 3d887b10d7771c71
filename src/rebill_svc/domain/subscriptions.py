"""A subscription's life as plain rules: what a new one may say and how it starts, what falls
due when its clock moves, and where each charge attempt's outcome leaves it. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from paymesh.platform.merchant_input import (
    amount_violation,
    currency_violation,
    metadata_violations,
    payment_method_violation,
)
from paymesh.platform.problems import FailedPrecondition, FieldViolation, InvalidArgument
from rebill_svc.domain.dunning import (
    AwaitCustomer,
    FinalStatus,
    GiveUp,
    Paid,
    RetryAt,
    Step,
    WaitForOutcome,
)
from rebill_svc.domain.periods import Interval, period, periods_starting, plan_violations

# How far ahead a trial or an anchor may lie (Stripe's limit for trials).
MAX_LEAD = timedelta(days=730)


class Status(StrEnum):
    INCOMPLETE = "incomplete"  # the first period's charge is not settled yet
    TRIALING = "trialing"  # before the first billed period
    ACTIVE = "active"
    PAST_DUE = "past_due"  # a period's charge was declined; dunning retries it
    UNPAID = "unpaid"  # dunning gave up; nothing more is charged
    CANCELED = "canceled"
    PAUSED = "paused"


def renewal_status(job_status: str) -> str:
    """A period's billing as merchants see it: `pending` until it is paid, given up, or waits
    for the customer (its job's scheduled, queued and running are the workers' business)."""
    return job_status if job_status in ("succeeded", "failed", "requires_action") else "pending"


# Subscriptions whose next period the scheduler bills when it falls due.
RENEWING = (Status.ACTIVE, Status.TRIALING)

# One durable queue per billing frequency.
QUEUES = {
    Interval.DAY: "rebill.daily",
    Interval.WEEK: "rebill.weekly",
    Interval.MONTH: "rebill.monthly",
    Interval.YEAR: "rebill.yearly",
}


@dataclass(frozen=True)
class Periods:
    """Where a subscription stands: its current period, numbered from the anchor (-1 for the
    time before the first billed period)."""

    number: int
    start: datetime
    end: datetime


@dataclass(frozen=True)
class NewSubscription:
    interval: Interval
    interval_count: int
    anchor: datetime
    status: Status
    current: Periods
    charge_now: bool  # the first period starts now: its charge is part of the creation


def new_subscription(
    *,
    payment_method: str,
    amount: int,
    currency: str,
    interval: str,
    interval_count: int,
    anchor: datetime | None,
    trial_end: datetime | None,
    metadata: dict[str, str],
    now: datetime,
) -> NewSubscription:
    """How a subscription starts, or InvalidArgument naming every field at fault. Periods are
    counted from the anchor; without one from the trial's end, else from now."""
    count = interval_count or 1
    violations = [
        v
        for v in (
            payment_method_violation(payment_method)
            or (None if payment_method else _missing("payment_method")),
            amount_violation("amount", amount, currency),
            currency_violation(currency),
        )
        if v
    ]
    violations += plan_violations(interval, count)
    violations += metadata_violations(metadata)
    if trial_end is not None and not now < trial_end <= now + MAX_LEAD:
        violations.append(
            FieldViolation(
                "trial_end", "invalid_trial_end", "trial_end must be in the future, within 730 days"
            )
        )
    earliest = trial_end if trial_end is not None and trial_end > now else now
    if anchor is not None and not earliest <= anchor <= now + MAX_LEAD:
        violations.append(
            FieldViolation(
                "billing_cycle_anchor",
                "invalid_billing_cycle_anchor",
                "billing_cycle_anchor must not be in the past (nor before trial_end),"
                " and within 730 days",
            )
        )
    if violations:
        raise InvalidArgument(violations)
    plan = Interval(interval)
    start = anchor or earliest
    if start > now:
        return NewSubscription(
            plan, count, start, Status.TRIALING, Periods(-1, now, start), charge_now=False
        )
    first = period(start, plan, count, 0)
    return NewSubscription(
        plan, count, start, Status.INCOMPLETE, Periods(0, first.start, first.end), charge_now=True
    )


def _missing(field: str) -> FieldViolation:
    return FieldViolation(field, "missing", f"{field} is required")


@dataclass(frozen=True)
class Plan:
    interval: Interval
    interval_count: int
    anchor: datetime


def next_periods(plan: Plan, current_number: int) -> Periods:
    """The period after the current one."""
    following = period(plan.anchor, plan.interval, plan.interval_count, current_number + 1)
    return Periods(following.number, following.start, following.end)


def resumed_periods(plan: Plan, current: Periods, now: datetime) -> Periods:
    """Where a subscription resumed at `now` stands: periods that started while it was paused
    are skipped, not billed; it resumes in the period that holds `now`."""
    skipped = list(
        periods_starting(plan.anchor, plan.interval, plan.interval_count, current.number, now)
    )
    if not skipped:
        return current
    last = skipped[-1]
    return Periods(last.number, last.start, last.end)


def pausable(status: str) -> None:
    if status not in RENEWING:
        raise FailedPrecondition(
            f"a subscription that is {status} cannot be paused", reason="subscription_not_active"
        )


def resumable(status: str) -> None:
    if status != Status.PAUSED:
        raise FailedPrecondition(
            f"a subscription that is {status} is not paused", reason="subscription_not_paused"
        )


def cancelable(status: str) -> None:
    if status == Status.CANCELED:
        raise FailedPrecondition(
            "the subscription is already canceled", reason="subscription_canceled"
        )


@dataclass(frozen=True)
class AfterAttempt:
    """What an attempt's outcome does to its job and its subscription."""

    # succeeded | scheduled (a retry) | failed | running (outcome unknown) | requires_action
    # (the customer must authenticate the charge: the merchant is told)
    job_status: str
    subscription_status: Status | None  # None: unchanged
    next_attempt: int | None = None
    next_attempt_at: datetime | None = None
    event: str | None = None  # the subscription event to emit besides rebill.*


# A period whose subscription ended (canceled, paused, unpaid) before its attempt ran.
NOT_ATTEMPTED = AfterAttempt("failed", None)


def after_attempt(step: Step, subscription_status: str) -> AfterAttempt:
    """A subscription canceled or paused meanwhile stays so: the outcome only pays or fails
    the period."""
    settled_elsewhere = subscription_status in (Status.CANCELED, Status.PAUSED, Status.UNPAID)
    if isinstance(step, WaitForOutcome):
        return AfterAttempt("running", None)
    if isinstance(step, AwaitCustomer):
        return AfterAttempt("requires_action", None)  # the subscription's status stays
    if isinstance(step, Paid):
        if settled_elsewhere:
            return AfterAttempt("succeeded", None)
        return AfterAttempt("succeeded", Status.ACTIVE, event="subscription.updated")
    if isinstance(step, RetryAt):
        if settled_elsewhere:
            return AfterAttempt("failed", None)
        return AfterAttempt(
            "scheduled", Status.PAST_DUE, step.attempt, step.at, event="subscription.past_due"
        )
    assert isinstance(step, GiveUp)
    if settled_elsewhere:
        return AfterAttempt("failed", None)
    final = Status(step.status.value)
    event = (
        "subscription.canceled" if step.status == FinalStatus.CANCELED else "subscription.updated"
    )
    return AfterAttempt("failed", final, event=event)
