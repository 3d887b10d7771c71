"""The life of a rebill job in PostgreSQL: one job per (subscription, period) under a unique
constraint, and at most one unsettled job per subscription, so a period can never be billed
twice and periods are billed in order.

    scheduled ──(due on its clock)──▶ queued ──(a worker's lease)──▶ running ──▶ succeeded
        ▲                               ▲                              │    └──▶ failed
        └────── declined: next attempt ─┼──────────────────────────────┘
                                        └── lease expired (dead worker, unknown outcome)

Every transition is one transaction with its audit row and outbox rows (events, and the
message that hands the job to a worker). A worker's writes are fenced by its lease: one that
lost its lease changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.db import autocommit
from rebill_svc import records
from rebill_svc.domain.dunning import FinalStatus, Outcome, RetryPolicy
from rebill_svc.domain.periods import Interval
from rebill_svc.domain.subscriptions import (
    QUEUES,
    AfterAttempt,
    Plan,
    Status,
    next_periods,
)
from rebill_svc.tables import rebill_attempts, rebill_jobs, retry_policies, subscriptions

OPEN = ("scheduled", "queued", "running")

# Renewable subscriptions whose current period has ended on their clock and that have no
# unsettled job, fairly across merchants: each merchant's first due subscription, then each
# one's second, … so one merchant's thousands of renewals cannot starve another's. Rows are
# locked, so a concurrent cancel or pause either lands first (and the row no longer matches)
# or waits for this batch. The candidates come from the statement's snapshot, but a row that
# another transaction changed and committed before it was locked here is locked in its newest
# version, and only the outer WHERE is checked again on it: that WHERE must therefore itself
# say the period is still the one found due, or a concurrent scheduler's (or resume's) period
# would be advanced a second time and the period between never billed.
_DUE = text(
    """
    SELECT s.* FROM rebill.subscriptions s
    JOIN (
      SELECT d.id, d.turn, d.current_period_end FROM (
        SELECT s.id, s.current_period_end,
               row_number() OVER (PARTITION BY s.merchant_id
                                  ORDER BY s.current_period_end, s.id) AS turn
        FROM rebill.subscriptions s LEFT JOIN rebill.test_clocks c ON c.id = s.test_clock
        WHERE s.status IN ('active', 'trialing')
          AND s.current_period_end <= coalesce(c.frozen_time, now())
          AND NOT EXISTS (SELECT 1 FROM rebill.rebill_jobs j WHERE j.subscription_id = s.id
                          AND j.status IN ('scheduled', 'queued', 'running'))
      ) d ORDER BY d.turn, d.current_period_end LIMIT :batch
    ) due ON due.id = s.id
    WHERE s.status IN ('active', 'trialing') AND s.current_period_end = due.current_period_end
    ORDER BY due.turn, due.current_period_end
    FOR UPDATE OF s SKIP LOCKED
    """
)

# Declined periods whose next attempt is due on their clock.
_RETRIES_DUE = text(
    """
    UPDATE rebill.rebill_jobs j SET status = 'queued', queued_at = now(), updated_at = now()
    FROM (
      SELECT j.id FROM rebill.rebill_jobs j LEFT JOIN rebill.test_clocks c ON c.id = j.test_clock
      WHERE j.status = 'scheduled' AND j.due_at <= coalesce(c.frozen_time, now())
      ORDER BY j.due_at LIMIT :batch FOR UPDATE OF j SKIP LOCKED
    ) due WHERE j.id = due.id
    RETURNING j.*
    """
)

# Jobs a worker should hold but nobody does: a lease that stopped beating (the worker died,
# or an unknown outcome is due for another look), or a message that should long have been
# taken (lost with a broker's queue). Re-publishing is safe: a job runs only under a lease,
# and an attempt charges only under its own idempotency key.
_STALE = text(
    """
    UPDATE rebill.rebill_jobs j SET status = 'queued', queued_at = now(), updated_at = now(),
           lease_owner = NULL, lease_expires_at = NULL
    FROM (
      SELECT id FROM rebill.rebill_jobs
      WHERE (status = 'running' AND lease_expires_at < now())
         OR (status = 'queued' AND queued_at < now() - make_interval(secs => :requeue_after))
      ORDER BY updated_at LIMIT :batch FOR UPDATE SKIP LOCKED
    ) stale WHERE j.id = stale.id
    RETURNING j.*
    """
)


@dataclass(frozen=True)
class Claimed:
    job: Row
    subscription: Row
    policy: RetryPolicy
    retrying_unknown: bool  # this attempt ran before and its outcome is not known yet


class JobStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reads = autocommit(engine)

    # --- the scheduler ------------------------------------------------------------------

    async def schedule_due(self, batch: int) -> int:
        """Starts the next period of up to `batch` subscriptions whose period ended (or
        cancels those set to end with it); returns how many it handled. Safe beside another
        scheduler (a deposed leader still finishing a round): each row is locked and checked
        to be in the period found due (see _DUE), so no period is advanced twice or skipped;
        tests/integration/test_rebill_faults.py races two over 10,000 subscriptions."""
        async with self._engine.begin() as connection:
            due = (await connection.execute(_DUE, {"batch": batch})).all()
            if not due:
                return 0
            advanced, jobs, canceled, audit = [], [], [], []
            for row in due:
                if row.cancel_at_period_end:
                    canceled.append({"s_id": row.id, "canceled_at": row.current_period_end})
                    continue
                plan = Plan(Interval(row.interval), row.interval_count, row.billing_cycle_anchor)
                following = next_periods(plan, row.period_number)
                advanced.append(
                    {
                        "s_id": row.id,
                        "number": following.number,
                        "start": following.start,
                        "end": following.end,
                    }
                )
                jobs.append(
                    {
                        "id": records.new_id("rj_"),
                        "subscription_id": row.id,
                        "merchant_id": row.merchant_id,
                        "livemode": row.livemode,
                        "test_clock": row.test_clock,
                        "queue": QUEUES[Interval(row.interval)],
                        "period_number": following.number,
                        "period_start": following.start,
                        "period_end": following.end,
                        "amount": row.amount,
                        "currency": row.currency,
                        "status": "queued",
                        "due_at": following.start,
                    }
                )
            if advanced:
                await connection.execute(
                    update(subscriptions)
                    .where(subscriptions.c.id == bindparam("s_id"))
                    .values(
                        status=Status.ACTIVE.value,
                        period_number=bindparam("number"),
                        current_period_start=bindparam("start"),
                        current_period_end=bindparam("end"),
                        updated_at=func.now(),
                    ),
                    advanced,
                )
                created = (
                    await connection.execute(
                        insert(rebill_jobs)
                        .values(queued_at=func.now())
                        .on_conflict_do_nothing()
                        .returning(rebill_jobs),
                        jobs,
                    )
                ).all()
                await records.publish_jobs(connection, created)
                audit += [
                    records.audit_values(
                        merchant_id=job.merchant_id,
                        actor="scheduler",
                        action="rebill.scheduled",
                        object_id=job.id,
                        result="queued",
                        subscription_id=job.subscription_id,
                        period_start=job.period_start.isoformat(),
                    )
                    for job in created
                ]
            for cancel in canceled:
                row = (
                    await connection.execute(
                        update(subscriptions)
                        .where(subscriptions.c.id == cancel["s_id"])
                        .values(
                            status=Status.CANCELED.value,
                            canceled_at=cancel["canceled_at"],
                            updated_at=func.now(),
                        )
                        .returning(subscriptions)
                    )
                ).one()
                audit.append(
                    records.audit_values(
                        merchant_id=row.merchant_id,
                        actor="scheduler",
                        action="subscription.cancel",
                        object_id=row.id,
                        result=row.status,
                        at_period_end=True,
                    )
                )
                await records.event(connection, "subscription.canceled", "subscription", row)
            await records.audit_many(connection, audit)
            return len(due)

    async def queue_due_retries(self, batch: int) -> int:
        """Hands every declined period whose next attempt is due to the workers."""
        async with self._engine.begin() as connection:
            jobs = (await connection.execute(_RETRIES_DUE, {"batch": batch})).all()
            await records.publish_jobs(connection, jobs)
            return len(jobs)

    async def reclaim_stale(self, batch: int, requeue_after: float) -> int:
        async with self._engine.begin() as connection:
            jobs = (
                await connection.execute(_STALE, {"batch": batch, "requeue_after": requeue_after})
            ).all()
            await records.publish_jobs(connection, jobs)
            await records.audit_many(
                connection,
                [
                    records.audit_values(
                        merchant_id=job.merchant_id,
                        actor="scheduler",
                        action="rebill.reclaimed",
                        object_id=job.id,
                        result="queued",
                        attempt=job.attempt,
                    )
                    for job in jobs
                ],
            )
            return len(jobs)

    async def oldest_heartbeat_age(self) -> float:
        """Seconds since the stalest running job's worker last beat (0: none running)."""
        async with self._reads.connect() as connection:
            age = await connection.scalar(
                select(
                    func.coalesce(
                        func.extract("epoch", func.now() - func.min(rebill_jobs.c.heartbeat_at)),
                        0,
                    )
                ).where(rebill_jobs.c.status == "running", rebill_jobs.c.lease_owner.is_not(None))
            )
        return float(age or 0)

    # --- a worker -----------------------------------------------------------------------

    async def exists(self, job_id: str) -> bool:
        async with self._reads.connect() as connection:
            found = await connection.scalar(
                select(rebill_jobs.c.id).where(rebill_jobs.c.id == job_id)
            )
        return found is not None

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> Claimed | None:
        """Takes the job's lease if it is waiting for a worker (or its lease expired); None
        when it is settled or another worker holds it."""
        jobs = rebill_jobs.c
        async with self._engine.begin() as connection:
            job = (
                await connection.execute(
                    update(rebill_jobs)
                    .where(
                        jobs.id == job_id,
                        (jobs.status == "queued")
                        | ((jobs.status == "running") & (jobs.lease_expires_at < func.now())),
                    )
                    .values(
                        status="running",
                        lease_owner=owner,
                        lease_expires_at=func.now() + timedelta(seconds=lease_seconds),
                        heartbeat_at=func.now(),
                        runs=jobs.runs + 1,
                        updated_at=func.now(),
                    )
                    .returning(rebill_jobs)
                )
            ).first()
            if job is None:
                return None
            return await self.claimed(connection, job)

    async def claimed(self, connection, job: Row) -> Claimed:
        """What a run of `job`, leased in `connection`'s transaction, needs to know (also for
        a job created already leased: the first period, charged by its creation)."""
        subscription = (
            await connection.execute(
                select(subscriptions).where(subscriptions.c.id == job.subscription_id)
            )
        ).one()
        earlier = await connection.scalar(
            select(rebill_attempts.c.outcome).where(
                rebill_attempts.c.job_id == job.id, rebill_attempts.c.attempt == job.attempt
            )
        )
        policy = await policy_of(connection, job.merchant_id)
        return Claimed(job, subscription, policy, retrying_unknown=earlier == Outcome.UNKNOWN)

    async def heartbeat(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Extends the lease; False if it was lost (another worker may run the job now)."""
        async with self._reads.connect() as connection:
            kept = await connection.scalar(
                update(rebill_jobs)
                .where(rebill_jobs.c.id == job_id, rebill_jobs.c.lease_owner == owner)
                .values(
                    lease_expires_at=func.now() + timedelta(seconds=lease_seconds),
                    heartbeat_at=func.now(),
                )
                .returning(rebill_jobs.c.id)
            )
        return kept is not None

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
        recheck_after: float,
        actor: str = "worker",
    ) -> bool:
        """Records the attempt's outcome (None: the attempt did not run, the subscription
        ended first) and what follows from it; False if the lease was lost meanwhile."""
        job = claimed.job
        jobs = rebill_jobs.c
        values: dict = {"status": after.job_status, "updated_at": func.now(), "lease_owner": None}
        if after.job_status == "running":  # outcome unknown: look again once the lease lapses
            values["lease_expires_at"] = func.now() + timedelta(seconds=recheck_after)
        else:
            values["lease_expires_at"] = None
        if after.next_attempt is not None:
            values.update(attempt=after.next_attempt, due_at=after.next_attempt_at)
        async with self._engine.begin() as connection:
            settled = (
                await connection.execute(
                    update(rebill_jobs)
                    .where(jobs.id == job.id, jobs.lease_owner == owner, jobs.status == "running")
                    .values(**values)
                    .returning(rebill_jobs)
                )
            ).first()
            if settled is None:
                return False
            if outcome is not None:
                await connection.execute(
                    insert(rebill_attempts)
                    .values(
                        job_id=job.id,
                        attempt=job.attempt,
                        subscription_id=job.subscription_id,
                        idempotency_key=idempotency_key,
                        outcome=outcome.value,
                        decline_code=decline_code,
                        payment_intent=payment_intent,
                    )
                    .on_conflict_do_update(
                        index_elements=[rebill_attempts.c.job_id, rebill_attempts.c.attempt],
                        set_={
                            "outcome": outcome.value,
                            "decline_code": decline_code,
                            "payment_intent": payment_intent,
                            "at": func.now(),
                        },
                        where=rebill_attempts.c.outcome == Outcome.UNKNOWN.value,
                    )
                )
            if after.job_status in ("succeeded", "failed"):
                kind = "rebill.succeeded" if after.job_status == "succeeded" else "rebill.failed"
                await records.event(connection, kind, "rebill_job", settled)
                await records.wake_scheduler(connection)  # the next period may be due
            subscription = None
            if after.subscription_status is not None or after.job_status != "running":
                subscription = await self._update_subscription(connection, job, after)
            # The audit rows last: their insert takes the merchant's chain lock until commit,
            # and every worker settling that merchant's jobs waits for it.
            await records.audit(
                connection,
                merchant_id=job.merchant_id,
                actor=actor,
                action="rebill.attempt",
                object_id=job.id,
                result=after.job_status,
                attempt=job.attempt,
                outcome=outcome.value if outcome else "skipped",
                decline_code=decline_code,
                payment_intent=payment_intent,
            )
            if subscription is not None and after.subscription_status is not None:
                await records.audit(
                    connection,
                    merchant_id=subscription.merchant_id,
                    actor=actor,
                    action="subscription.status",
                    object_id=subscription.id,
                    result=subscription.status,
                    job_id=job.id,
                )
        return True

    async def _update_subscription(self, connection, job: Row, after: AfterAttempt) -> Row:
        values: dict = {"updated_at": func.now(), "next_attempt_at": after.next_attempt_at}
        if after.subscription_status is not None:
            values["status"] = after.subscription_status.value
            if after.subscription_status == Status.CANCELED:
                values["canceled_at"] = func.now()
        row = (
            await connection.execute(
                update(subscriptions)
                .where(subscriptions.c.id == job.subscription_id)
                .values(**values)
                .returning(subscriptions)
            )
        ).one()
        if after.event:
            await records.event(connection, after.event, "subscription", row)
        return row


async def policy_of(connection, merchant_id: str) -> RetryPolicy:
    row = (
        await connection.execute(
            select(retry_policies).where(retry_policies.c.merchant_id == merchant_id)
        )
    ).first()
    if row is None:
        return RetryPolicy()
    return RetryPolicy(
        retry_after=tuple(timedelta(days=d) for d in row.retry_after_days),
        final_status=FinalStatus(row.final_status),
    )
