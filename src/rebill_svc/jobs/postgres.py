"""The life of a rebill job in PostgreSQL (the statements are in rebill_svc.jobs.statements;
the moves between statuses in rebill_svc.domain.jobs): one job per (subscription, period)
under a unique constraint, and at most one unsettled job per subscription, so a period can
never be billed twice and periods are billed in order.

requires_action: the PSP waits for the customer's authentication (3-D Secure); the merchant is
told (rebill.action_required) and brings the customer to the payment intent. It is settled
like succeeded and failed: the period is not retried, and the next one renews on time.

Every transition is one transaction with its audit row and outbox rows (events, and the
message that hands the job to a worker). A worker's writes are fenced by its lease: one that
lost its lease changes nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.coalesce import Coalescer
from paymesh.platform.db import autocommit, constant
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.outbox import event_values
from rebill_svc import records
from rebill_svc.domain.dunning import Outcome, RetryPolicy
from rebill_svc.domain.jobs import JOB_EVENTS, JobStatus, settle_action, sources
from rebill_svc.domain.periods import Interval
from rebill_svc.domain.subscriptions import (
    QUEUES,
    AfterAttempt,
    Plan,
    Status,
    next_periods,
)
from rebill_svc.jobs import statements as sql
from rebill_svc.jobs.models import Claimed, Job, Settled, policy_from
from rebill_svc.metrics import JOBS_FAILED
from rebill_svc.tables import rebill_attempts, rebill_jobs, retry_policies, subscriptions

log = structlog.get_logger(__name__)


class PostgresJobStore:
    """The scheduler's batches run on `engine`; a worker's claim and settle, once per job,
    straight on psycopg (`direct`)."""

    def __init__(self, engine: AsyncEngine, direct: DirectSql):
        self._engine = engine
        self._reads = autocommit(engine)
        self._direct = direct
        self._claims = Coalescer(self._claim_many)

    # --- the scheduler ------------------------------------------------------------------

    async def schedule_due(self, batch: int, among: list[str] | None = None) -> int:
        """Starts the next period of up to `batch` subscriptions whose period ended (or
        cancels those set to end with it), of all or only of the subscriptions `among`;
        returns how many it handled. One whose next period cannot be computed (past the
        calendar's end) is logged, counted and left as it is. Safe beside another scheduler
        (a deposed leader still finishing a round): each row is locked and checked to be in
        the period found due (see sql.DUE), so no period is advanced twice or skipped;
        tests/integration/test_rebill_faults.py races two over 10,000 subscriptions."""
        statement, params = (
            (sql.DUE, {"batch": batch})
            if among is None
            else (sql.DUE_AMONG, {"batch": batch, "ids": among})
        )
        async with self._engine.begin() as connection:
            due = (await connection.execute(statement, params)).all()
            if not due:
                return 0
            advanced, canceled, audit = [], [], []
            for row in due:
                if row.cancel_at_period_end:
                    canceled.append({"s_id": row.id, "canceled_at": row.current_period_end})
                    continue
                plan = Plan(Interval(row.interval), row.interval_count, row.billing_cycle_anchor)
                try:
                    following = next_periods(plan, row.period_number)
                except (ValueError, OverflowError) as error:
                    # Past the calendar's end: set aside, so the batch's others still start.
                    log.error(
                        "rebill_next_period_unknown", subscription_id=row.id, error=str(error)
                    )
                    JOBS_FAILED.labels("period_out_of_range").inc()
                    continue
                advanced.append(
                    {
                        "subscription_id": row.id,
                        "job_id": records.new_id("rj_"),
                        "queue": QUEUES[Interval(row.interval)],
                        "number": following.number,
                        "start": following.start.isoformat(),
                        "end": following.end.isoformat(),
                    }
                )
            if advanced:
                created = (
                    await connection.execute(sql.ADVANCE, {"periods": json.dumps(advanced)})
                ).all()
                # In the batch's order (each merchant's first, then each one's second, …), which
                # RETURNING does not keep: the workers take the messages in this order.
                turn = {period["subscription_id"]: n for n, period in enumerate(advanced)}
                created.sort(key=lambda job: turn[job.subscription_id])
                await records.publish_jobs(connection, created)
                audit += [
                    records.audit_values(
                        merchant_id=job.merchant_id,
                        actor="scheduler",
                        action="rebill.scheduled",
                        object_id=job.id,
                        result=JobStatus.QUEUED,
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
            return len(advanced) + len(canceled)

    async def queue_due_retries(self, batch: int) -> int:
        """Hands every declined period whose next attempt is due to the workers."""
        async with self._engine.begin() as connection:
            jobs = (await connection.execute(sql.RETRIES_DUE, {"batch": batch})).all()
            await records.publish_jobs(connection, jobs)
            return len(jobs)

    async def reclaim_stale(self, batch: int, requeue_after: float) -> int:
        async with self._engine.begin() as connection:
            jobs = (
                await connection.execute(
                    sql.STALE, {"batch": batch, "requeue_after": requeue_after}
                )
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
                        result=JobStatus.QUEUED,
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
                ).where(
                    rebill_jobs.c.status == constant(JobStatus.RUNNING),
                    rebill_jobs.c.lease_owner.is_not(None),
                )
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
        when it is settled or another worker holds it. One statement (see sql.CLAIM) for the
        claims made while the last one is out."""
        return await self._claims.submit((job_id, owner, float(lease_seconds)))

    async def _claim_many(self, claims: list[tuple[str, str, float]]) -> list[Claimed | None]:
        by_holder: dict[tuple[str, float], set[str]] = {}
        for job_id, owner, lease in claims:  # one worker: one owner and one lease time
            by_holder.setdefault((owner, lease), set()).add(job_id)
        leased: dict[tuple[str, str, float], Claimed] = {}
        for (owner, lease), job_ids in by_holder.items():
            rows = await self._direct.all(
                sql.CLAIM, {"job_ids": sorted(job_ids), "owner": owner, "lease": lease}
            )
            for row in rows:
                leased[(row["id"], owner, lease)] = Claimed(
                    Job.of(row),
                    row["subscription_status"],
                    row["payment_method"],
                    policy_from(row["policy_retry_after_days"], row["policy_final_status"]),
                    rerun=row["attempt_runs"] > 1,
                    first_attempt_at=row["first_attempt_at"],
                    declined_before=row["declined_before"],
                )
        # One lease, one run: a job claimed twice in one batch runs once.
        return [leased.pop(claim, None) for claim in claims]

    async def claimed(self, connection, job: Row) -> Claimed:
        """What a run of `job`, leased in `connection`'s transaction, needs to know, as sql.CLAIM
        reads it: for a job created already leased (the first period, charged by its
        creation), or one a merchant's new card runs now."""
        subscription = (
            await connection.execute(
                select(subscriptions).where(subscriptions.c.id == job.subscription_id)
            )
        ).one()
        policy = await policy_of(connection, job.merchant_id)
        return Claimed(
            Job.of(job._mapping),
            subscription.status,
            job.payment_method or subscription.payment_method,
            policy,
            rerun=job.attempt_runs > 1,
            first_attempt_at=await _first_attempt_at(connection, job),
        )

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
        decided_on: str | None,
        recheck_after: float,
        actor: str = "worker",
    ) -> Settled:
        """Records the attempt's outcome (None: the attempt did not run, the subscription
        ended first) and what follows from it, if the subscription's status is still
        `decided_on`, the one `after` was decided on (None: whatever it is). Nothing is
        recorded if the lease was lost meanwhile, or the status changed: the caller then
        decides again on the status returned.

        One statement in autocommit (see sql.SETTLE): the job's fenced update, the attempt, the
        subscription's change, the events, the audit rows and the scheduler's wake-up commit
        together or not at all, in one round trip. The audit insert locks one of the
        merchant's audit chains until the commit, so the lock is held for the server's work
        only, never across a round trip to a busy client."""
        job = claimed.job
        job_event_type = JOB_EVENTS.get(after.job_status)
        final = job_event_type is not None
        update_subscription = (
            after.subscription_status is not None or after.job_status != JobStatus.RUNNING
        )
        # Both events carry their object's row as this settle leaves it (see sql.SETTLE).
        job_event = (
            event_values(
                event_type=job_event_type,
                aggregate_type="rebill_job",
                aggregate_id=job.id,
                payload={},
            )
            if job_event_type is not None
            else None
        )
        subscription_event = (
            event_values(
                event_type=after.event,
                aggregate_type="subscription",
                aggregate_id=job.subscription_id,
                payload={},
            )
            if after.event and update_subscription
            else None
        )
        attempt_audit = records.audit_values(
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
        params = {
            "job_id": job.id,
            "owner": owner,
            "status": str(after.job_status),
            "from_statuses": [str(status) for status in sources(settle_action(after.job_status))],
            "recheck": float(recheck_after),
            "next_attempt": after.next_attempt,
            "next_attempt_at": after.next_attempt_at,
            "attempt": job.attempt,
            "subscription_id": job.subscription_id,
            "key": idempotency_key,
            "outcome": outcome.value if outcome is not None else None,
            "decline_code": decline_code,
            "payment_intent": payment_intent,
            "update_subscription": update_subscription,
            "subscription_status": (
                after.subscription_status.value if after.subscription_status else None
            ),
            "job_event_id": job_event["event_id"] if job_event else None,
            "job_event_type": job_event["event_type"] if job_event else None,
            "job_event_headers": json.dumps(job_event["headers"]) if job_event else None,
            "sub_event_id": subscription_event["event_id"] if subscription_event else None,
            "sub_event_type": subscription_event["event_type"] if subscription_event else None,
            "sub_event_headers": (
                json.dumps(subscription_event["headers"]) if subscription_event else None
            ),
            "actor": actor,
            "attempt_result": str(after.job_status),
            "attempt_details": json.dumps(attempt_audit["details"]),
            "wake": final,
            "wake_channel": records.WAKE_CHANNEL,
            "decided_on": decided_on,
        }
        row = await self._direct.one(sql.SETTLE, params)
        return Settled(row["settled"] is not None, row["subscription_status"])


async def _first_attempt_at(connection, job: Row) -> datetime:
    """When the job's period was first attempted (its retries are timed from it): on a test
    clock, the period's start; else now for a first attempt, or when the first one ran."""
    if job.test_clock:
        return job.period_start
    if job.attempt == 1:
        return await connection.scalar(select(func.now()))
    first = await connection.scalar(
        select(rebill_attempts.c.at).where(
            rebill_attempts.c.job_id == job.id, rebill_attempts.c.attempt == 1
        )
    )
    return first or job.period_start


async def policy_of(connection, merchant_id: str) -> RetryPolicy:
    row = (
        await connection.execute(
            select(retry_policies).where(retry_policies.c.merchant_id == merchant_id)
        )
    ).first()
    if row is None:
        return RetryPolicy()
    return policy_from(row.retry_after_days, row.final_status)
