"""What a job store answers with: plain dataclasses, the same from PostgreSQL and from the
in-memory twin."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from rebill_svc.domain.dunning import FinalStatus, RetryPolicy
from rebill_svc.domain.jobs import JobStatus


@dataclass(frozen=True)
class Job:
    """What a run and its settle read of a job row."""

    id: str
    subscription_id: str
    merchant_id: str
    livemode: bool
    period_start: datetime
    period_end: datetime
    amount: int
    currency: str
    status: JobStatus
    attempt: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Job:
        values = {name: row[name] for name in _JOB_FIELDS}
        return cls(**{**values, "status": JobStatus(values["status"])})


_JOB_FIELDS = tuple(field.name for field in fields(Job))


@dataclass(frozen=True)
class Settled:
    """What a settle found: whether it recorded the outcome, and the subscription's status
    when it ran (under its row lock)."""

    recorded: bool
    subscription_status: str | None  # None: the subscription is gone


@dataclass(frozen=True)
class Claimed:
    job: Job
    subscription_status: str
    payment_method: str
    policy: RetryPolicy
    # This attempt was started before and its outcome is not known: it may have charged.
    rerun: bool
    first_attempt_at: datetime  # the period's first attempt: retries are timed from it
    # The period's earlier attempts an issuer declined (those a PSP could not take not
    # counted): what dunning's budget is spent on. 0 for a period's first attempt.
    declined_before: int = 0


def policy_from(retry_after_days, final_status) -> RetryPolicy:
    """The merchant's policy from its row's values (None: no row, the default)."""
    if final_status is None:
        return RetryPolicy()
    return RetryPolicy(
        retry_after=tuple(timedelta(days=d) for d in retry_after_days),
        final_status=FinalStatus(final_status),
    )
