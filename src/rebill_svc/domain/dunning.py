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
reuses that key and gets the attempt's first outcome."""

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
    UNKNOWN = "unknown"  # the gateway has not settled it yet


@dataclass(frozen=True)
class RetryPolicy:
    """A merchant's dunning. `retry_after`: when each retry runs, counted from the period's
    first attempt; a period gets 1 + len(retry_after) attempts in all."""

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


def next_step(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome,
    first_attempt_at: datetime,
    jitter: Callable[[float], float],
) -> Step:
    """After attempt `attempt` (1 for the first) of a period ended with `outcome`.
    `jitter(x)` returns a number in [-x, x] (random in the service, fixed in tests)."""
    if attempt < 1:
        raise ValueError(f"attempt {attempt} is below 1")
    # An attempt beyond the budget ran because the merchant shrank the policy while the
    # period was dunning: its outcome still counts, and it is the period's last.
    if outcome == Outcome.SUCCEEDED:
        return Paid()
    if outcome == Outcome.UNKNOWN:
        return WaitForOutcome()
    if outcome == Outcome.ACTION_REQUIRED:
        return AwaitCustomer()
    if outcome == Outcome.DECLINED_HARD or attempt >= policy.attempts:
        return GiveUp(policy.final_status)
    offset = policy.retry_after[attempt - 1]
    previous = policy.retry_after[attempt - 2] if attempt >= 2 else timedelta(0)
    gap = offset - previous
    moved = timedelta(seconds=jitter(policy.jitter_fraction) * gap.total_seconds())
    return RetryAt(attempt + 1, first_attempt_at + offset + moved)


def idempotency_key(subscription_id: str, period_start: datetime, attempt: int) -> str:
    """The gateway idempotency key of one attempt: the same attempt always charges under it,
    whatever time zone the database session handed `period_start` back in."""
    return f"rebill:{subscription_id}:{period_start.astimezone(UTC).isoformat()}:{attempt}"
