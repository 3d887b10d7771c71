"""The in-memory twin of `PostgresJobStore`: the same methods and the same rules (moves only
from the statuses the transition table allows, a worker's writes fenced by its lease, a
settle refused when the subscription's status is no longer the one it was decided on, an
unknown attempt replaced once by its known outcome, events and audit rows written only with
the change they describe), in dictionaries, on a clock the test moves. For unit tests of the
runner and the scheduler; tests/support/job_store_contract.py holds both stores to one suite
(tests/unit runs it on this twin, tests/integration on PostgreSQL)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from paymesh.platform.ids import new_id
from rebill_svc.domain.dunning import Outcome, RetryPolicy
from rebill_svc.domain.jobs import (
    JOB_EVENTS,
    UNSETTLED,
    JobAction,
    JobStatus,
    move,
    settle_action,
)
from rebill_svc.domain.periods import Interval
from rebill_svc.domain.subscriptions import (
    QUEUES,
    RENEWING,
    AfterAttempt,
    Plan,
    Status,
    next_periods,
)
from rebill_svc.jobs.models import Claimed, Job, Settled

DECLINES = (Outcome.DECLINED_SOFT, Outcome.DECLINED_HARD)


@dataclass
class StoredSubscription:
    id: str
    merchant_id: str
    status: str
    current_period_start: datetime
    current_period_end: datetime
    livemode: bool = False
    payment_method: str = "pm_twin"
    amount: int = 4200
    currency: str = "usd"
    interval: str = "month"
    interval_count: int = 1
    billing_cycle_anchor: datetime | None = None
    period_number: int = 0
    cancel_at_period_end: bool = False
    test_clock: str | None = None
    next_attempt_at: datetime | None = None
    canceled_at: datetime | None = None


@dataclass
class StoredJob:
    id: str
    subscription_id: str
    merchant_id: str
    livemode: bool
    test_clock: str | None
    queue: str
    period_number: int
    period_start: datetime
    period_end: datetime
    amount: int
    currency: str
    status: JobStatus
    due_at: datetime
    attempt: int = 1
    queued_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    runs: int = 0
    attempt_runs: int = 0
    payment_method: str | None = None
    payment_intent: str | None = None
    updated_at: datetime | None = None


@dataclass
class StoredAttempt:
    outcome: str
    idempotency_key: str
    decline_code: str
    payment_intent: str
    at: datetime


@dataclass
class Written:
    """An outbox row (an event or a job's message) or an audit row, as the twin keeps it."""

    kind: str  # the event type, the job message's routing key or the audit's action
    object_id: str
    result: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class InMemoryJobStore:
    def __init__(self, now: datetime | None = None):
        self.now = now or datetime.now(UTC).replace(microsecond=0)
        self.subscriptions: dict[str, StoredSubscription] = {}
        self.jobs: dict[str, StoredJob] = {}
        self.attempts: dict[tuple[str, int], StoredAttempt] = {}
        self.clocks: dict[str, datetime] = {}
        self.policies: dict[str, RetryPolicy] = {}
        self.events: list[Written] = []
        self.messages: list[Written] = []  # job messages: (routing key, job id, attempt)
        self.audits: list[Written] = []
        self.woken: list[str] = []  # subscriptions whose next period a settle found due

    # --- the test's hands ---------------------------------------------------------------

    def pass_time(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def add_subscription(self, subscription: StoredSubscription) -> None:
        if subscription.billing_cycle_anchor is None:
            subscription.billing_cycle_anchor = subscription.current_period_start
        self.subscriptions[subscription.id] = subscription

    def add_job(self, job: StoredJob) -> None:
        job.updated_at = job.updated_at or self.now
        self.jobs[job.id] = job

    def jobs_of(self, subscription_id: str) -> list[StoredJob]:
        return sorted(
            (j for j in self.jobs.values() if j.subscription_id == subscription_id),
            key=lambda j: j.period_start,
        )

    # --- the scheduler ------------------------------------------------------------------

    async def schedule_due(self, batch: int, among: list[str] | None = None) -> int:
        due = [
            s
            for s in self.subscriptions.values()
            if (among is None or s.id in among)
            and s.status in RENEWING
            and s.current_period_end <= self._clock_now(s.test_clock)
            and not self._open_job(s.id)
        ]
        # Fairly across merchants: each one's first due subscription, then each one's second.
        turns: dict[str, int] = {}
        ranked = []
        for s in sorted(due, key=lambda s: (s.merchant_id, s.current_period_end, s.id)):
            turns[s.merchant_id] = turns.get(s.merchant_id, 0) + 1
            ranked.append((turns[s.merchant_id], s.current_period_end, s))
        ranked.sort(key=lambda r: (r[0], r[1]))
        handled = 0
        for _, _, s in ranked[:batch]:
            if s.cancel_at_period_end:
                s.status, s.canceled_at = Status.CANCELED, s.current_period_end
                self._audit(s.id, "subscription.cancel", s.status, at_period_end=True)
                self._event("subscription.canceled", s.id)
                handled += 1
                continue
            plan = Plan(Interval(s.interval), s.interval_count, s.billing_cycle_anchor)
            try:
                following = next_periods(plan, s.period_number)
            except (ValueError, OverflowError):
                continue
            s.status, s.period_number = Status.ACTIVE, following.number
            s.current_period_start, s.current_period_end = following.start, following.end
            job = StoredJob(
                id=new_id("rj_"),
                subscription_id=s.id,
                merchant_id=s.merchant_id,
                livemode=s.livemode,
                test_clock=s.test_clock,
                queue=QUEUES[Interval(s.interval)],
                period_number=following.number,
                period_start=following.start,
                period_end=following.end,
                amount=s.amount,
                currency=s.currency,
                status=JobStatus.QUEUED,
                due_at=following.start,
                queued_at=self.now,
            )
            self.add_job(job)
            self._publish(job)
            self._audit(job.id, "rebill.scheduled", job.status)
            handled += 1
        return handled

    async def queue_due_retries(self, batch: int) -> int:
        due = sorted(
            (
                j
                for j in self.jobs.values()
                if move(j.status, JobAction.RETRY_DUE) and j.due_at <= self._clock_now(j.test_clock)
            ),
            key=lambda j: j.due_at,
        )[:batch]
        for job in due:
            self._move(job, JobAction.RETRY_DUE)
            job.queued_at = self.now
            self._publish(job)
        return len(due)

    async def reclaim_stale(self, batch: int, requeue_after: float) -> int:
        lost_before = self.now - timedelta(seconds=requeue_after)
        stale = sorted(
            (
                j
                for j in self.jobs.values()
                if (j.status == JobStatus.RUNNING and self._lapsed(j))
                or (j.status == JobStatus.QUEUED and j.queued_at and j.queued_at < lost_before)
            ),
            key=lambda j: j.updated_at or self.now,
        )[:batch]
        for job in stale:
            self._move(job, JobAction.RECLAIM)
            job.queued_at, job.lease_owner, job.lease_expires_at = self.now, None, None
            self._publish(job)
            self._audit(job.id, "rebill.reclaimed", job.status, attempt=job.attempt)
        return len(stale)

    async def oldest_heartbeat_age(self) -> float:
        beats = [
            j.heartbeat_at
            for j in self.jobs.values()
            if j.status == JobStatus.RUNNING and j.lease_owner and j.heartbeat_at
        ]
        return (self.now - min(beats)).total_seconds() if beats else 0.0

    # --- a worker -----------------------------------------------------------------------

    async def exists(self, job_id: str) -> bool:
        return job_id in self.jobs

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> Claimed | None:
        job = self.jobs.get(job_id)
        if job is None or move(job.status, JobAction.CLAIM) is None:
            return None
        if job.status == JobStatus.RUNNING and not self._lapsed(job):
            return None  # held by a worker
        subscription = self.subscriptions[job.subscription_id]
        self._move(job, JobAction.CLAIM)
        if job.attempt_runs == 0 or job.payment_method is None:
            job.payment_method = subscription.payment_method
        job.lease_owner = owner
        job.lease_expires_at = self.now + timedelta(seconds=lease_seconds)
        job.heartbeat_at = self.now
        job.runs += 1
        job.attempt_runs += 1
        return Claimed(
            Job.of(dataclasses.asdict(job)),
            subscription.status,
            job.payment_method,
            self.policies.get(job.merchant_id, RetryPolicy()),
            rerun=job.attempt_runs > 1,
            first_attempt_at=self._first_attempt_at(job),
            declined_before=sum(
                1
                for (job_id_, attempt), a in self.attempts.items()
                if job_id_ == job.id and attempt < job.attempt and a.outcome in DECLINES
            ),
        )

    async def heartbeat(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.lease_owner != owner:
            return False
        job.lease_expires_at = self.now + timedelta(seconds=lease_seconds)
        job.heartbeat_at = self.now
        return True

    async def settle(
        self,
        claimed: Claimed,
        owner: str,
        *,
        outcome: Outcome | None,
        decline_code: str,
        payment_intent: str,
        idempotency_key: str,
        after: AfterAttempt,
        decided_on: str | None,
        recheck_after: float,
        actor: str = "worker",
    ) -> Settled:
        job = self.jobs.get(claimed.job.id)
        subscription = self.subscriptions.get(claimed.job.subscription_id)
        status_now = subscription.status if subscription is not None else None
        action = settle_action(after.job_status)
        if (
            job is None
            or job.lease_owner != owner
            or move(job.status, action) is None
            or (decided_on is not None and decided_on != status_now)
        ):
            return Settled(False, status_now)
        assert subscription is not None
        self._move(job, action)
        job.lease_owner = None
        job.lease_expires_at = (
            self.now + timedelta(seconds=recheck_after) if job.status == JobStatus.RUNNING else None
        )
        if after.next_attempt is not None:
            job.attempt, job.attempt_runs = after.next_attempt, 0
            job.due_at = after.next_attempt_at or job.due_at
        job.payment_intent = payment_intent or job.payment_intent
        if outcome is not None:
            key = (job.id, claimed.job.attempt)
            known = self.attempts.get(key)
            if known is None or known.outcome == Outcome.UNKNOWN:
                self.attempts[key] = StoredAttempt(
                    outcome.value, idempotency_key, decline_code, payment_intent, self.now
                )
        update_subscription = (
            after.subscription_status is not None or after.job_status != JobStatus.RUNNING
        )
        if update_subscription:
            subscription.next_attempt_at = after.next_attempt_at
            if after.subscription_status is not None:
                subscription.status = after.subscription_status
                if after.subscription_status == Status.CANCELED:
                    subscription.canceled_at = self.now
        job_event = JOB_EVENTS.get(job.status)
        if job_event is not None:
            self._event(job_event, job.id)
        if after.event and update_subscription:
            self._event(after.event, subscription.id)
        self._audit(
            job.id,
            "rebill.attempt",
            job.status,
            actor=actor,
            outcome=outcome.value if outcome else "skipped",
        )
        if after.subscription_status is not None:
            self._audit(subscription.id, "subscription.status", subscription.status, actor=actor)
        if job_event is not None and subscription.current_period_end <= self._clock_now(
            subscription.test_clock
        ):
            self.woken.append(subscription.id)
        return Settled(True, status_now)

    # --- what the statements do in PostgreSQL -------------------------------------------

    def _move(self, job: StoredJob, action: JobAction) -> None:
        moved = move(job.status, action)
        if moved is None:
            raise AssertionError(f"{action} may not start from {job.status}")
        job.status, job.updated_at = moved, self.now

    def _lapsed(self, job: StoredJob) -> bool:
        return job.lease_expires_at is not None and job.lease_expires_at < self.now

    def _open_job(self, subscription_id: str) -> bool:
        return any(
            j.subscription_id == subscription_id and j.status in UNSETTLED
            for j in self.jobs.values()
        )

    def _clock_now(self, clock: str | None) -> datetime:
        return self.clocks[clock] if clock else self.now

    def _first_attempt_at(self, job: StoredJob) -> datetime:
        if job.test_clock:
            return job.period_start
        if job.attempt == 1:
            return self.now
        first = self.attempts.get((job.id, 1))
        return first.at if first else job.period_start

    def _publish(self, job: StoredJob) -> None:
        self.messages.append(Written(job.queue, job.id, details={"attempt": job.attempt}))

    def _event(self, event_type: str, object_id: str) -> None:
        self.events.append(Written(event_type, object_id))

    def _audit(self, object_id: str, action: str, result: str, **details: Any) -> None:
        self.audits.append(Written(action, object_id, str(result), details))
