"""The life of a rebill job in PostgreSQL: one job per (subscription, period) under a unique
constraint, and at most one unsettled job per subscription, so a period can never be billed
twice and periods are billed in order.

    scheduled ──(due on its clock)──▶ queued ──(a worker's lease)──▶ running ──▶ succeeded
        ▲                               ▲                              │    ├──▶ failed
        └────── declined: next attempt ─┼──────────────────────────────┘    └──▶ requires_action
                                        └── lease expired (dead worker, unknown outcome)

requires_action: the PSP waits for the customer's authentication (3-D Secure); the merchant is
told (rebill.action_required) and brings the customer to the payment intent. It is settled
like succeeded and failed: the period is not retried, and the next one renews on time.

Every transition is one transaction with its audit row and outbox rows (events, and the
message that hands the job to a worker). A worker's writes are fenced by its lease: one that
lost its lease changes nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.coalesce import Coalescer
from paymesh.platform.db import autocommit, constant
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.outbox import event_values, snapshot_sql
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
from rebill_svc.metrics import JOBS_FAILED
from rebill_svc.tables import rebill_attempts, rebill_jobs, retry_policies, subscriptions

log = structlog.get_logger(__name__)

OPEN = ("scheduled", "queued", "running")

# Renewable subscriptions whose current period has ended on their clock and that have no
# unsettled job, fairly across merchants: each merchant's first due subscription, then each
# one's second, … so one merchant's thousands of renewals cannot starve another's. Each row is
# locked by its primary key, so a concurrent cancel or pause either lands first (and the row
# no longer matches) or waits for this batch. The candidates come from the statement's
# snapshot, but a row that another transaction changed and committed before it was locked here
# is locked in its newest version, and only the locking subquery's WHERE is checked again on
# it: that WHERE must therefore itself say the period is still the one found due, or a
# concurrent scheduler's (or resume's) period would be advanced a second time and the period
# between never billed.
_DUE_SQL = """
    {candidates}
    SELECT s.* FROM (
      SELECT d.id, d.turn, d.current_period_end FROM (
        SELECT c.id, c.current_period_end,
               row_number() OVER (PARTITION BY c.merchant_id
                                  ORDER BY c.current_period_end, c.id) AS turn
        FROM candidates c
      ) d ORDER BY d.turn, d.current_period_end LIMIT :batch
    ) due CROSS JOIN LATERAL (
      SELECT * FROM rebill.subscriptions s
      WHERE s.id = due.id AND s.status IN ('active', 'trialing')
        AND s.current_period_end = due.current_period_end
      FOR UPDATE SKIP LOCKED
    ) s
    ORDER BY due.turn, due.current_period_end
    """
_NO_OPEN_JOB = """NOT EXISTS (SELECT 1 FROM rebill.rebill_jobs j WHERE j.subscription_id = s.id
                        AND j.status IN ('scheduled', 'queued', 'running'))"""
# A round's candidates, read from two indexes so that its cost follows the batch, not the
# number of subscriptions: at most a batch per merchant on real time (the merchants found by
# a skip scan, each one's due subscriptions an index range ending now) and a batch per test
# clock (a range ending at its frozen time). A plain scan had to read every renewable
# subscription and number every due one on each batch: quadratic in a renewal wave.
_ALL_CANDIDATES = f"""
    WITH RECURSIVE merchants AS (
      (SELECT s.merchant_id FROM rebill.subscriptions s
       WHERE s.status IN ('active', 'trialing') AND s.test_clock IS NULL
       ORDER BY s.merchant_id LIMIT 1)
      UNION ALL
      SELECT (SELECT s.merchant_id FROM rebill.subscriptions s
              WHERE s.status IN ('active', 'trialing') AND s.test_clock IS NULL
                AND s.merchant_id > m.merchant_id
              ORDER BY s.merchant_id LIMIT 1)
      FROM merchants m WHERE m.merchant_id IS NOT NULL
    ), candidates AS (
      SELECT d.* FROM merchants m CROSS JOIN LATERAL (
        SELECT s.id, s.merchant_id, s.current_period_end FROM rebill.subscriptions s
        WHERE s.merchant_id = m.merchant_id AND s.status IN ('active', 'trialing')
          AND s.test_clock IS NULL AND s.current_period_end <= now() AND {_NO_OPEN_JOB}
        ORDER BY s.current_period_end, s.id LIMIT :batch
      ) d
      UNION ALL
      SELECT d.* FROM rebill.test_clocks c CROSS JOIN LATERAL (
        SELECT s.id, s.merchant_id, s.current_period_end FROM rebill.subscriptions s
        WHERE s.test_clock = c.id AND s.status IN ('active', 'trialing')
          AND s.current_period_end <= c.frozen_time AND {_NO_OPEN_JOB}
        ORDER BY s.current_period_end, s.id LIMIT :batch
      ) d
    )"""
# The same among the given subscriptions only (primary-key lookups): what a settle may have
# made due, its subscription's next period.
_CANDIDATES_AMONG = f"""
    WITH candidates AS (
      SELECT s.id, s.merchant_id, s.current_period_end
      FROM rebill.subscriptions s LEFT JOIN rebill.test_clocks c ON c.id = s.test_clock
      WHERE s.id = ANY(CAST(:ids AS varchar[])) AND s.status IN ('active', 'trialing')
        AND s.current_period_end <= coalesce(c.frozen_time, now()) AND {_NO_OPEN_JOB}
    )"""
_DUE = text(_DUE_SQL.format(candidates=_ALL_CANDIDATES))
_DUE_AMONG = text(_DUE_SQL.format(candidates=_CANDIDATES_AMONG))

# The batch's subscriptions move to their next period, and each period's job is created,
# queued (its message follows in the outbox): one statement.
_ADVANCE = text(
    """
    WITH p AS (
      SELECT * FROM jsonb_to_recordset(CAST(:periods AS jsonb)) AS p(
        subscription_id text, job_id text, queue text, number integer, start timestamptz,
        "end" timestamptz)
    ), advanced AS (
      UPDATE rebill.subscriptions s SET status = 'active', period_number = p.number,
        current_period_start = p.start, current_period_end = p."end", updated_at = now()
      FROM p WHERE s.id = p.subscription_id
      RETURNING s.id, s.merchant_id, s.livemode, s.test_clock, s.amount, s.currency
    )
    INSERT INTO rebill.rebill_jobs (id, subscription_id, merchant_id, livemode, test_clock,
      queue, period_number, period_start, period_end, amount, currency, status, due_at,
      queued_at)
    SELECT p.job_id, a.id, a.merchant_id, a.livemode, a.test_clock, p.queue, p.number,
      p.start, p."end", a.amount, a.currency, 'queued', p.start, now()
    FROM p JOIN advanced a ON a.id = p.subscription_id
    ON CONFLICT DO NOTHING
    RETURNING *
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


# The event of each status a settle ends a job in.
_JOB_EVENTS = {
    "succeeded": "rebill.succeeded",
    "failed": "rebill.failed",
    "requires_action": "rebill.action_required",
}


# A worker's outcome, all of it in one statement (autocommit: its own transaction, one round
# trip): the subscription's row locked first, so that a merchant's cancel, pause or resume
# either lands before this settle or waits for it; nothing else happens unless the status it
# holds now is the one the outcome was decided on (:decided_on: the worker read it at its
# claim, and a cancel may have landed while the charge was at the PSP; the worker then decides
# again on the status this statement returns); the job's update fenced by the lease (nothing
# else happens when it matches no row),
# the attempt (an unknown outcome may be replaced once, by the known one), the subscription's
# change, the events (rebill.succeeded/failed; the subscription's, carrying the row as
# updated), the audit rows (last: the chain trigger locks one of the merchant's chains, which the
# commit releases right after, without another round trip), and, when the subscription's next
# period is due already (a test clock moved past it), the scheduler's wake-up naming it. The
# wake-up reads the subscription as it was before this statement, which is enough: a settle
# never moves the period's end, and a clock that moves later wakes the scheduler itself.
# Data-modifying WITH clauses all run to completion, in the one snapshot, each seeing the
# others' rows through RETURNING only.
_SETTLE = text(
    f"""
    WITH subscription_now AS (
      SELECT status FROM rebill.subscriptions WHERE id = CAST(:subscription_id AS varchar)
      FOR UPDATE
    ), settled AS (
      UPDATE rebill.rebill_jobs SET
        status = CAST(:status AS varchar), updated_at = now(), lease_owner = NULL,
        lease_expires_at = CASE WHEN CAST(:status AS varchar) = 'running'
          THEN now() + make_interval(secs => CAST(:recheck AS double precision)) END,
        attempt = coalesce(CAST(:next_attempt AS integer), attempt),
        attempt_runs = CASE WHEN CAST(:next_attempt AS integer) IS NULL THEN attempt_runs
          ELSE 0 END,
        due_at = CASE WHEN CAST(:next_attempt AS integer) IS NULL THEN due_at
          ELSE CAST(:next_attempt_at AS timestamptz) END,
        payment_intent = coalesce(nullif(CAST(:payment_intent AS varchar), ''), payment_intent)
      WHERE id = CAST(:job_id AS varchar) AND lease_owner = CAST(:owner AS varchar)
        AND status = 'running'
        AND (CAST(:decided_on AS varchar) IS NULL
             OR CAST(:decided_on AS varchar) = (SELECT status FROM subscription_now))
      RETURNING *
    ), attempt AS (
      INSERT INTO rebill.rebill_attempts AS a
        (job_id, attempt, subscription_id, idempotency_key, outcome, decline_code, payment_intent)
      SELECT settled.id, CAST(:attempt AS integer), CAST(:subscription_id AS varchar),
             CAST(:key AS varchar), CAST(:outcome AS varchar), CAST(:decline_code AS varchar),
             CAST(:payment_intent AS varchar)
      FROM settled WHERE CAST(:outcome AS varchar) IS NOT NULL
      ON CONFLICT (job_id, attempt) DO UPDATE SET outcome = EXCLUDED.outcome,
        decline_code = EXCLUDED.decline_code, payment_intent = EXCLUDED.payment_intent,
        at = now()
      WHERE a.outcome = 'unknown'
    ), sub AS (
      UPDATE rebill.subscriptions s SET updated_at = now(),
        next_attempt_at = CAST(:next_attempt_at AS timestamptz),
        status = coalesce(CAST(:subscription_status AS varchar), s.status),
        canceled_at = CASE WHEN CAST(:subscription_status AS varchar) = 'canceled' THEN now()
          ELSE s.canceled_at END
      FROM settled WHERE s.id = settled.subscription_id
        AND CAST(:update_subscription AS boolean)
      RETURNING s.*
    ), events AS (
      INSERT INTO rebill.outbox
        (event_id, event_type, aggregate_type, aggregate_id, payload, headers)
      SELECT event_id, event_type, aggregate_type, aggregate_id, payload, headers FROM (
        SELECT 1 AS n, CAST(:job_event_id AS varchar) AS event_id,
               CAST(:job_event_type AS varchar) AS event_type,
               CAST('rebill_job' AS varchar) AS aggregate_type, settled.id AS aggregate_id,
               {snapshot_sql("settled")} AS payload,
               CAST(:job_event_headers AS jsonb) AS headers
        FROM settled WHERE CAST(:job_event_type AS varchar) IS NOT NULL
        UNION ALL
        SELECT 2, CAST(:sub_event_id AS varchar), CAST(:sub_event_type AS varchar),
               'subscription', sub.id, {snapshot_sql("sub")},
               CAST(:sub_event_headers AS jsonb)
        FROM sub WHERE CAST(:sub_event_type AS varchar) IS NOT NULL
      ) e ORDER BY n
    ), audit AS (
      INSERT INTO rebill.rebill_audit (merchant_id, actor, action, object_id, result, details)
      SELECT merchant_id, actor, action, object_id, result, details FROM (
        SELECT 1 AS n, settled.merchant_id, CAST(:actor AS varchar) AS actor,
               CAST('rebill.attempt' AS varchar) AS action, settled.id AS object_id,
               CAST(:attempt_result AS varchar) AS result,
               CAST(:attempt_details AS jsonb) AS details
        FROM settled
        UNION ALL
        SELECT 2, sub.merchant_id, CAST(:actor AS varchar), 'subscription.status', sub.id,
               sub.status, jsonb_build_object('job_id', CAST(:job_id AS varchar))
        FROM sub WHERE CAST(:subscription_status AS varchar) IS NOT NULL
      ) r ORDER BY n
    ), wake AS (
      SELECT pg_notify(CAST(:wake_channel AS text), settled.subscription_id) FROM settled
      JOIN rebill.subscriptions s ON s.id = settled.subscription_id
      LEFT JOIN rebill.test_clocks c ON c.id = s.test_clock
      WHERE CAST(:wake AS boolean) AND s.current_period_end <= coalesce(c.frozen_time, now())
    )
    SELECT (SELECT id FROM settled) AS settled, (SELECT count(*) FROM wake) AS woken,
           (SELECT status FROM subscription_now) AS subscription_status
    """
)


# Workers take jobs' leases and learn what each run needs, in one statement (autocommit, one
# round trip) for the jobs a worker claims while its last claim is out: each lease only if the
# job waits for a worker or its lease expired, counting the current attempt's starts (a second
# one is a re-run) and fixing the card it charges at its first start (a re-run charges that
# card under the attempt's key, even if the subscription's card changed since); then the
# subscription's status, when the period was first attempted (retries are timed from it; on a
# test clock, from the period's start on the clock's time), how many of its earlier attempts
# an issuer declined (dunning's budget) and the merchant's retry policy.
_CLAIM = text(
    """
    WITH leased AS (
      UPDATE rebill.rebill_jobs j SET status = 'running', lease_owner = CAST(:owner AS varchar),
        lease_expires_at = now() + make_interval(secs => CAST(:lease AS double precision)),
        heartbeat_at = now(), runs = runs + 1, attempt_runs = attempt_runs + 1,
        payment_method = CASE WHEN j.attempt_runs = 0 OR j.payment_method IS NULL
          THEN (SELECT s.payment_method FROM rebill.subscriptions s WHERE s.id = j.subscription_id)
          ELSE j.payment_method END,
        updated_at = now()
      WHERE id = ANY(CAST(:job_ids AS varchar[]))
        AND (status = 'queued' OR (status = 'running' AND lease_expires_at < now()))
      RETURNING *
    )
    SELECT leased.*, s.status AS subscription_status,
      CASE WHEN leased.test_clock IS NOT NULL THEN leased.period_start
           WHEN leased.attempt = 1 THEN now()
           ELSE coalesce((SELECT a.at FROM rebill.rebill_attempts a
                          WHERE a.job_id = leased.id AND a.attempt = 1), leased.period_start)
      END AS first_attempt_at,
      (SELECT count(*) FROM rebill.rebill_attempts a WHERE a.job_id = leased.id
         AND a.attempt < leased.attempt AND a.outcome IN ('declined_soft', 'declined_hard')
      ) AS declined_before,
      p.retry_after_days AS policy_retry_after_days, p.final_status AS policy_final_status
    FROM leased JOIN rebill.subscriptions s ON s.id = leased.subscription_id
    LEFT JOIN rebill.retry_policies p ON p.merchant_id = leased.merchant_id
    """
)


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
    status: str
    attempt: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Job:
        return cls(**{name: row[name] for name in _JOB_FIELDS})


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


class JobStore:
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
        the period found due (see _DUE), so no period is advanced twice or skipped;
        tests/integration/test_rebill_faults.py races two over 10,000 subscriptions."""
        statement, params = (
            (_DUE, {"batch": batch})
            if among is None
            else (_DUE_AMONG, {"batch": batch, "ids": among})
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
                    await connection.execute(_ADVANCE, {"periods": json.dumps(advanced)})
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
            return len(advanced) + len(canceled)

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
                ).where(
                    rebill_jobs.c.status == constant("running"),
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
        when it is settled or another worker holds it. One statement (see _CLAIM) for the
        claims made while the last one is out."""
        return await self._claims.submit((job_id, owner, float(lease_seconds)))

    async def _claim_many(self, claims: list[tuple[str, str, float]]) -> list[Claimed | None]:
        by_holder: dict[tuple[str, float], set[str]] = {}
        for job_id, owner, lease in claims:  # one worker: one owner and one lease time
            by_holder.setdefault((owner, lease), set()).add(job_id)
        leased: dict[tuple[str, str, float], Claimed] = {}
        for (owner, lease), job_ids in by_holder.items():
            rows = await self._direct.all(
                _CLAIM, {"job_ids": sorted(job_ids), "owner": owner, "lease": lease}
            )
            for row in rows:
                leased[(row["id"], owner, lease)] = Claimed(
                    Job.of(row),
                    row["subscription_status"],
                    row["payment_method"],
                    _policy(row["policy_retry_after_days"], row["policy_final_status"]),
                    rerun=row["attempt_runs"] > 1,
                    first_attempt_at=row["first_attempt_at"],
                    declined_before=row["declined_before"],
                )
        # One lease, one run: a job claimed twice in one batch runs once.
        return [leased.pop(claim, None) for claim in claims]

    async def claimed(self, connection, job: Row) -> Claimed:
        """What a run of `job`, leased in `connection`'s transaction, needs to know, as _CLAIM
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

        One statement in autocommit (see _SETTLE): the job's fenced update, the attempt, the
        subscription's change, the events, the audit rows and the scheduler's wake-up commit
        together or not at all, in one round trip. The audit insert locks one of the
        merchant's audit chains until the commit, so the lock is held for the server's work
        only, never across a round trip to a busy client."""
        job = claimed.job
        job_event_type = _JOB_EVENTS.get(after.job_status)
        final = job_event_type is not None
        update_subscription = after.subscription_status is not None or after.job_status != "running"
        # Both events carry their object's row as this settle leaves it (see _SETTLE).
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
            "status": after.job_status,
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
            "attempt_result": after.job_status,
            "attempt_details": json.dumps(attempt_audit["details"]),
            "wake": final,
            "wake_channel": records.WAKE_CHANNEL,
            "decided_on": decided_on,
        }
        row = await self._direct.one(_SETTLE, params)
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
    return _policy(row.retry_after_days, row.final_status)


def _policy(retry_after_days, final_status) -> RetryPolicy:
    """The merchant's policy from its row's values (None: no row, the default)."""
    if final_status is None:
        return RetryPolicy()
    return RetryPolicy(
        retry_after=tuple(timedelta(days=d) for d in retry_after_days),
        final_status=FinalStatus(final_status),
    )
