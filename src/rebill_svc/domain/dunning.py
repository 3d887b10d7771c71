"""What happens after each charge attempt of a period: one policy decides it all (which
declines are retried, when, how many attempts a period gets in total, and the final state),
so retries and dunning cannot drift apart.

An attempt that needs the customer (3-D Secure) is neither paid nor declined: the period
waits for the merchant to bring the customer back to its payment intent; it is not retried
and does not count toward the final status.

A new attempt is started only once the previous one is known to have failed: an attempt whose
outcome is unknown is waited for (the gateway's recovery settles it), never retried beside, so
at most one attempt of a period can ever succeed. Each attempt charges under its own
idempotency key, and a re-run of the same attempt (a worker died, a message came twice)
reuses that key and gets the attempt's first outcome.

Only an issuer's decline counts toward the final status: the budget is `policy.attempts`
declines. An attempt no PSP could take (every PSP failed: the gateway's 503, waited out as
UNKNOWN under the same key; or no PSP holds the card any more and none would take it from
the vault: NOT_CHARGED) is retried on the schedule, never counted. Retries are timed by
attempt number from the period's first attempt, the schedule's last gap repeating past its
end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class FinalStatus(StrEnum):
    UNPAID = "unpaid"
    CANCELED = "canceled"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED_SOFT = "declined_soft"  # a later retry may pass (insufficient funds, …)
    DECLINED_HARD = "declined_hard"  # this card will not pass (stolen, detached, …)
    ACTION_REQUIRED = "requires_action"  # the PSP waits for the customer (3-D Secure)
    # No PSP took it and no issuer said no (no PSP holds the card, and none would take it
    # again without the customer): retried, never counted toward the final status.
    NOT_CHARGED = "not_charged"
    UNKNOWN = "unknown"  # the gateway has not settled it yet


@dataclass(frozen=True)
class RetryPolicy:
    """A merchant's dunning. `retry_after`: when each retry runs, counted from the period's
    first attempt; a period gets 1 + len(retry_after) declined attempts in all."""

    retry_after: tuple[timedelta, ...] = (
        timedelta(days=1),
        timedelta(days=3),
        timedelta(days=5),
        timedelta(days=7),
    )
    final_status: FinalStatus = FinalStatus.UNPAID
    jitter_fraction: float = 0.1  # each retry moves by up to this share of its gap, either way

    @property
    def attempts(self) -> int:
        return 1 + len(self.retry_after)

    def retry_offset(self, retry: int) -> timedelta:
        """When retry `retry` (1 for the first) runs, from the period's first attempt; past the
        schedule's end its last gap repeats (a day if it has none)."""
        if retry <= 0:
            return timedelta(0)
        schedule = self.retry_after
        if retry <= len(schedule):
            return schedule[retry - 1]
        last = schedule[-1] if schedule else timedelta(0)
        gap = last - (schedule[-2] if len(schedule) >= 2 else timedelta(0))
        return last + (retry - len(schedule)) * (gap if gap > timedelta(0) else timedelta(days=1))


@dataclass(frozen=True)
class Paid:
    """The period is paid: the subscription is active, and the next period comes due."""


@dataclass(frozen=True)
class WaitForOutcome:
    """The attempt's outcome is not known yet: nothing new may start."""


@dataclass(frozen=True)
class AwaitCustomer:
    """The PSP needs the customer to authenticate the charge: the merchant brings them back;
    no retry is scheduled and nothing counts toward the final status."""


@dataclass(frozen=True)
class RetryAt:
    attempt: int  # the attempt to run (2 for the first retry)
    at: datetime


@dataclass(frozen=True)
class GiveUp:
    status: FinalStatus


Step = Paid | WaitForOutcome | AwaitCustomer | RetryAt | GiveUp


@dataclass(frozen=True)
class DunningState:
    """Where dunning stands for a subscription, as operators read it."""

    retry_after_days: list[int]
    attempts_made: int  # of the period still owed (0: nothing is owed)
    next_attempt_at: datetime | None
    final_status: FinalStatus


def dunning_state(
    policy: RetryPolicy, open_period_attempts: int, next_attempt_at: datetime | None
) -> DunningState:
    """`open_period_attempts`: the attempts made for the period still owed (0 when its
    latest period was paid, or none was billed); `next_attempt_at`: the subscription's."""
    return DunningState(
        retry_after_days=[int(gap.total_seconds() // 86400) for gap in policy.retry_after],
        attempts_made=open_period_attempts,
        next_attempt_at=next_attempt_at,
        final_status=policy.final_status,
    )


def next_step(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome,
    first_attempt_at: datetime,
    jitter: Callable[[float], float],
    declined_before: int | None = None,
) -> Step:
    """After attempt `attempt` (1 for the first) of a period ended with `outcome`.
    `jitter(x)` returns a number in [-x, x] (random in the service, fixed in tests).
    `declined_before`: how many of the period's earlier attempts an issuer declined (None:
    all of them)."""
    if attempt < 1:
        raise ValueError(f"attempt {attempt} is below 1")
    declines = attempt - 1 if declined_before is None else declined_before
    # An attempt beyond the budget ran because the merchant shrank the policy while the
    # period was dunning: its outcome still counts, and it is the period's last.
    if outcome == Outcome.SUCCEEDED:
        return Paid()
    if outcome == Outcome.UNKNOWN:
        return WaitForOutcome()
    if outcome == Outcome.ACTION_REQUIRED:
        return AwaitCustomer()
    if outcome == Outcome.DECLINED_HARD:
        return GiveUp(policy.final_status)
    if outcome == Outcome.DECLINED_SOFT and declines + 1 >= policy.attempts:
        return GiveUp(policy.final_status)
    offset = policy.retry_offset(attempt)
    gap = offset - policy.retry_offset(attempt - 1)
    moved = timedelta(seconds=jitter(policy.jitter_fraction) * gap.total_seconds())
    return RetryAt(attempt + 1, first_attempt_at + offset + moved)


def idempotency_key(subscription_id: str, period_start: datetime, attempt: int) -> str:
    """The gateway idempotency key of one attempt: the same attempt always charges under it,
    whatever time zone the database session handed `period_start` back in."""
    return f"rebill:{subscription_id}:{period_start.astimezone(UTC).isoformat()}:{attempt}"
