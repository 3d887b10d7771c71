"""One contract, two job stores: every rule of a rebill job's life runs against the PostgreSQL
`PostgresJobStore` (tests/integration/test_rebill_job_store_contract.py) and its in-memory
twin (tests/unit/test_rebill_job_store.py), so unit tests that use the twin (the runner's)
test the real thing's behaviour.

A scenario gets an `arena`: the store, hands that arrange what a merchant's API would have
done (a due subscription, a changed one), eyes on what the store wrote, and a clock."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Protocol

from rebill_svc.domain.dunning import (
    Outcome,
    Paid,
    RetryAt,
    RetryPolicy,
    WaitForOutcome,
)
from rebill_svc.domain.jobs import JobStatus
from rebill_svc.domain.subscriptions import NOT_ATTEMPTED, Status, after_attempt
from rebill_svc.jobs.memory import InMemoryJobStore, StoredSubscription
from rebill_svc.jobs.models import Claimed
from rebill_svc.memory_dead_letters import InMemoryDeadLetters

PAYMENT_METHOD = "pm_contract"
# Two moments the database and the twin may tell apart by the time a statement takes.
SAME_MOMENT = timedelta(seconds=5)


class Arena(Protocol):
    store: object
    letters: object  # the dead letters beside the store

    def add_due_subscription(self, subscription_id: str, merchant_id: str) -> None: ...

    def set_subscription(self, subscription_id: str, **values: object) -> None: ...

    def subscription_status(self, subscription_id: str) -> str: ...

    def next_attempt_at(self, subscription_id: str) -> datetime | None: ...

    def jobs_of(self, subscription_id: str) -> list[str]: ...

    def job(self, job_id: str) -> tuple[str, int, str | None]:
        """(status, attempt, lease owner)."""

    def attempts(self, job_id: str) -> list[tuple[int, str]]: ...

    def events(self, object_id: str) -> list[str]: ...

    def audits(self, object_id: str) -> list[tuple[str, str]]:
        """(action, result), in order."""

    def actors(self, object_id: str) -> list[tuple[str, str | None]]:
        """(actor, the operator's email in the details), in order."""

    def messages(self, job_id: str) -> int:
        """How many messages handed the job to a worker."""

    def now(self) -> datetime: ...

    async def pass_time(self, seconds: float) -> None: ...


class MemoryArena:
    """The twin's arena: its clock moves only when told."""

    def __init__(self):
        self.store = InMemoryJobStore()
        self.letters = InMemoryDeadLetters(self.store)

    def add_due_subscription(self, subscription_id: str, merchant_id: str) -> None:
        start = self.store.now - timedelta(days=31)
        self.store.add_subscription(
            StoredSubscription(
                id=subscription_id,
                merchant_id=merchant_id,
                status=Status.ACTIVE,
                current_period_start=start,
                current_period_end=_month_after(start),
                payment_method=PAYMENT_METHOD,
            )
        )

    def set_subscription(self, subscription_id: str, **values: object) -> None:
        subscription = self.store.subscriptions[subscription_id]
        for name, value in values.items():
            setattr(subscription, name, value)

    def subscription_status(self, subscription_id: str) -> str:
        return self.store.subscriptions[subscription_id].status

    def next_attempt_at(self, subscription_id: str) -> datetime | None:
        return self.store.subscriptions[subscription_id].next_attempt_at

    def jobs_of(self, subscription_id: str) -> list[str]:
        return [j.id for j in self.store.jobs_of(subscription_id)]

    def job(self, job_id: str) -> tuple[str, int, str | None]:
        job = self.store.jobs[job_id]
        return job.status, job.attempt, job.lease_owner

    def attempts(self, job_id: str) -> list[tuple[int, str]]:
        return sorted((n, a.outcome) for (j, n), a in self.store.attempts.items() if j == job_id)

    def events(self, object_id: str) -> list[str]:
        return [e.kind for e in self.store.events if e.object_id == object_id]

    def audits(self, object_id: str) -> list[tuple[str, str]]:
        return [(a.kind, a.result) for a in self.store.audits if a.object_id == object_id]

    def actors(self, object_id: str) -> list[tuple[str, str | None]]:
        return [
            (a.details.get("actor", ""), a.details.get("operator"))
            for a in self.store.audits
            if a.object_id == object_id
        ]

    def messages(self, job_id: str) -> int:
        return sum(1 for m in self.store.messages if m.object_id == job_id)

    def now(self) -> datetime:
        return self.store.now

    async def pass_time(self, seconds: float) -> None:
        self.store.pass_time(seconds)


def _month_after(start: datetime) -> datetime:
    month = start.month % 12 + 1
    year = start.year + (start.month == 12)
    return start.replace(year=year, month=month, day=min(start.day, 28))


def names() -> tuple[str, str]:
    """A merchant's and a subscription's ids of the scenario's own."""
    tag = uuid.uuid4().hex[:12]
    return f"acct_jc{tag}", f"sub_jc{tag}"


async def one_queued_job(arena: Arena) -> tuple[str, str]:
    """A due subscription's next period, scheduled: (subscription id, job id)."""
    merchant, subscription = names()
    arena.add_due_subscription(subscription, merchant)
    assert await arena.store.schedule_due(10) >= 1
    [job] = arena.jobs_of(subscription)
    return subscription, job


async def settle(arena: Arena, claimed: Claimed, owner: str, outcome: Outcome, after, **kw):
    return await arena.store.settle(
        claimed,
        owner,
        outcome=outcome,
        decline_code=kw.pop("decline_code", ""),
        payment_intent=kw.pop("payment_intent", "pi_contract"),
        idempotency_key=f"key-{claimed.job.id}-{claimed.job.attempt}",
        after=after,
        decided_on=kw.pop("decided_on", claimed.subscription_status),
        recheck_after=kw.pop("recheck_after", 10.0),
    )


# --- the scenarios ------------------------------------------------------------------------


async def a_due_subscriptions_next_period_is_queued_once(arena: Arena) -> None:
    subscription, job = await one_queued_job(arena)

    assert arena.job(job) == (JobStatus.QUEUED, 1, None)
    assert arena.messages(job) == 1
    assert arena.audits(job) == [("rebill.scheduled", JobStatus.QUEUED)]
    assert arena.subscription_status(subscription) == Status.ACTIVE
    await arena.store.schedule_due(10)
    assert arena.jobs_of(subscription) == [job]  # its period is no longer due


async def a_claim_leases_a_waiting_job_once_and_only_its_holder_beats(arena: Arena) -> None:
    _, job = await one_queued_job(arena)

    claimed = await arena.store.claim(job, "worker-1", 30)
    assert claimed is not None
    assert (claimed.job.id, claimed.job.status, claimed.job.attempt) == (job, "running", 1)
    assert (claimed.subscription_status, claimed.payment_method) == ("active", PAYMENT_METHOD)
    assert (claimed.rerun, claimed.declined_before, claimed.policy) == (False, 0, RetryPolicy())
    # A first attempt's retries are timed from now, not from the period's start (days ago).
    assert abs(claimed.first_attempt_at - arena.now()) < SAME_MOMENT
    assert await arena.store.claim(job, "worker-2", 30) is None
    assert arena.job(job) == (JobStatus.RUNNING, 1, "worker-1")
    assert await arena.store.heartbeat(job, "worker-1", 30)
    assert not await arena.store.heartbeat(job, "worker-2", 30)
    assert await arena.store.claim("rj_missing", "worker-1", 30) is None


async def a_settle_is_fenced_by_the_lease_and_writes_its_events_with_it(arena: Arena) -> None:
    subscription, job = await one_queued_job(arena)
    claimed = await arena.store.claim(job, "worker-1", 30)
    paid = after_attempt(Paid(), Status.ACTIVE)

    stranger = await settle(arena, claimed, "worker-2", Outcome.SUCCEEDED, paid)
    assert not stranger.recorded
    assert arena.attempts(job) == [] and arena.events(job) == []
    holder = await settle(arena, claimed, "worker-1", Outcome.SUCCEEDED, paid)
    assert holder.recorded
    assert arena.job(job) == (JobStatus.SUCCEEDED, 1, None)
    assert arena.attempts(job) == [(1, Outcome.SUCCEEDED)]
    assert arena.events(job) == ["rebill.succeeded"]
    assert arena.events(subscription)[-1:] == ["subscription.updated"]
    assert arena.audits(job)[-1:] == [("rebill.attempt", JobStatus.SUCCEEDED)]
    assert not (await settle(arena, claimed, "worker-1", Outcome.SUCCEEDED, paid)).recorded
    assert await arena.store.claim(job, "worker-2", 30) is None  # settled


async def a_settle_decided_on_a_changed_status_writes_nothing_and_names_the_new_one(
    arena: Arena,
) -> None:
    subscription, job = await one_queued_job(arena)
    claimed = await arena.store.claim(job, "worker-1", 30)
    arena.set_subscription(subscription, status=Status.CANCELED)  # landed during the charge

    stale = await settle(
        arena, claimed, "worker-1", Outcome.SUCCEEDED, after_attempt(Paid(), Status.ACTIVE)
    )
    assert (stale.recorded, stale.subscription_status) == (False, Status.CANCELED)
    assert arena.job(job) == (JobStatus.RUNNING, 1, "worker-1")
    assert arena.attempts(job) == []
    again = await settle(
        arena,
        claimed,
        "worker-1",
        Outcome.SUCCEEDED,
        after_attempt(Paid(), Status.CANCELED),
        decided_on=Status.CANCELED,
    )
    assert again.recorded
    assert arena.job(job)[0] == JobStatus.SUCCEEDED
    assert arena.subscription_status(subscription) == Status.CANCELED
    assert arena.events(subscription) == []


async def a_lapsed_lease_is_reclaimed_and_rerun_with_the_card_it_started_with(
    arena: Arena,
) -> None:
    subscription, job = await one_queued_job(arena)
    assert await arena.store.claim(job, "worker-dead", 0.3) is not None
    arena.set_subscription(subscription, payment_method="pm_newer")

    await arena.pass_time(0.6)
    assert await arena.store.reclaim_stale(10, requeue_after=300) >= 1
    assert arena.job(job) == (JobStatus.QUEUED, 1, None)
    assert arena.messages(job) == 2
    assert arena.audits(job)[-1] == ("rebill.reclaimed", JobStatus.QUEUED)
    assert not await arena.store.heartbeat(job, "worker-dead", 30)
    rerun = await arena.store.claim(job, "worker-new", 30)
    assert rerun is not None
    assert (rerun.rerun, rerun.payment_method) == (True, PAYMENT_METHOD)


async def a_message_lost_with_its_queue_is_published_again_but_no_settled_job(
    arena: Arena,
) -> None:
    _, lost = await one_queued_job(arena)
    _, settled = await one_queued_job(arena)
    claimed = await arena.store.claim(settled, "worker-1", 30)
    await settle(
        arena, claimed, "worker-1", Outcome.SUCCEEDED, after_attempt(Paid(), Status.ACTIVE)
    )

    await arena.pass_time(0.6)
    await arena.store.reclaim_stale(10, requeue_after=0.3)
    assert (arena.job(lost)[0], arena.messages(lost)) == (JobStatus.QUEUED, 2)
    assert (arena.job(settled)[0], arena.messages(settled)) == (JobStatus.SUCCEEDED, 1)
    assert "rebill.reclaimed" not in [action for action, _ in arena.audits(settled)]


async def a_declined_period_waits_for_its_retry_then_runs_the_next_attempt(
    arena: Arena,
) -> None:
    subscription, job = await one_queued_job(arena)
    claimed = await arena.store.claim(job, "worker-1", 30)
    retry = after_attempt(RetryAt(2, arena.now() - timedelta(seconds=1)), Status.ACTIVE)
    declined = await settle(
        arena, claimed, "worker-1", Outcome.DECLINED_SOFT, retry, decline_code="card_declined"
    )

    assert declined.recorded
    assert arena.job(job) == (JobStatus.SCHEDULED, 2, None)
    assert arena.subscription_status(subscription) == Status.PAST_DUE
    assert arena.events(subscription)[-1:] == ["subscription.past_due"]
    assert arena.events(job) == []  # not settled: no rebill.* event
    assert await arena.store.queue_due_retries(10) >= 1
    assert arena.job(job) == (JobStatus.QUEUED, 2, None)
    assert arena.messages(job) == 2
    second = await arena.store.claim(job, "worker-2", 30)
    assert (second.job.attempt, second.rerun, second.declined_before) == (2, False, 1)
    # Retries stay timed from the period's first attempt.
    assert abs(second.first_attempt_at - claimed.first_attempt_at) < SAME_MOMENT


async def an_unknown_outcome_is_asked_again_and_replaced_once_by_the_known_one(
    arena: Arena,
) -> None:
    _, job = await one_queued_job(arena)
    claimed = await arena.store.claim(job, "worker-1", 30)
    unknown = await settle(
        arena,
        claimed,
        "worker-1",
        Outcome.UNKNOWN,
        after_attempt(WaitForOutcome(), Status.ACTIVE),
        recheck_after=0.3,
    )
    assert unknown.recorded
    assert arena.job(job) == (JobStatus.RUNNING, 1, None)
    assert arena.attempts(job) == [(1, Outcome.UNKNOWN)]

    await arena.pass_time(0.6)
    assert await arena.store.reclaim_stale(10, requeue_after=300) >= 1
    rerun = await arena.store.claim(job, "worker-2", 30)
    assert rerun.rerun
    paid = after_attempt(Paid(), Status.ACTIVE)
    assert (await settle(arena, rerun, "worker-2", Outcome.SUCCEEDED, paid)).recorded
    assert arena.attempts(job) == [(1, Outcome.SUCCEEDED)]
    assert arena.events(job) == ["rebill.succeeded"]


async def a_period_whose_subscription_ended_first_is_settled_failed_without_an_attempt(
    arena: Arena,
) -> None:
    subscription, job = await one_queued_job(arena)
    arena.set_subscription(subscription, status=Status.PAUSED)
    claimed = await arena.store.claim(job, "worker-1", 30)
    assert claimed.subscription_status == Status.PAUSED

    skipped = await arena.store.settle(
        claimed,
        "worker-1",
        outcome=None,
        decline_code="",
        payment_intent="",
        idempotency_key="key",
        after=NOT_ATTEMPTED,
        decided_on=None,
        recheck_after=10,
    )
    assert skipped.recorded
    assert arena.job(job)[0] == JobStatus.FAILED
    assert arena.attempts(job) == []
    assert arena.events(job) == ["rebill.failed"]
    assert arena.subscription_status(subscription) == Status.PAUSED


SCENARIOS = (
    a_due_subscriptions_next_period_is_queued_once,
    a_claim_leases_a_waiting_job_once_and_only_its_holder_beats,
    a_settle_is_fenced_by_the_lease_and_writes_its_events_with_it,
    a_settle_decided_on_a_changed_status_writes_nothing_and_names_the_new_one,
    a_lapsed_lease_is_reclaimed_and_rerun_with_the_card_it_started_with,
    a_message_lost_with_its_queue_is_published_again_but_no_settled_job,
    a_declined_period_waits_for_its_retry_then_runs_the_next_attempt,
    an_unknown_outcome_is_asked_again_and_replaced_once_by_the_known_one,
    a_period_whose_subscription_ended_first_is_settled_failed_without_an_attempt,
)
