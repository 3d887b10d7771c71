"""The statements of a rebill job's life in PostgreSQL (rebill_svc.jobs.postgres runs them).
Every status they test or write comes from rebill_svc.domain.jobs' transition table (or the
subscription's and the attempt's enums), written into the SQL as constants: a partial index's
predicate is matched only by a constant (paymesh.platform.db.constant)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import text

from paymesh.platform.outbox import snapshot_sql
from rebill_svc.domain.dunning import Outcome
from rebill_svc.domain.jobs import TRANSITIONS, UNSETTLED, JobAction, JobStatus, sources
from rebill_svc.domain.subscriptions import RENEWING, Status


def constant_sql(value: str) -> str:
    """`value` (an enum's, never input) as an SQL string constant."""
    if not value.replace("_", "").isalnum():
        raise ValueError(f"not a plain word: {value!r}")
    return f"'{value}'"


def in_list(values: Iterable[str]) -> str:
    """`values` as the list of an SQL IN."""
    return "(" + ", ".join(constant_sql(value) for value in values) + ")"


def condition(
    action: JobAction, column: str = "status", only_if: Mapping[JobStatus, str] | None = None
) -> str:
    """SQL that holds for a job whose status `action` may start from (the transition
    table's), each source further limited by its condition in `only_if`."""
    only_if = only_if or {}
    unknown = set(only_if) - set(sources(action))
    if unknown:
        raise ValueError(f"{action} does not start from {sorted(unknown)}")
    terms = []
    for status in sources(action):
        term = f"{column} = {constant_sql(status)}"
        terms.append(f"({term} AND {only_if[status]})" if status in only_if else term)
    return "(" + " OR ".join(terms) + ")"


def target(action: JobAction) -> str:
    """The one status `action` moves every job it applies to into."""
    [status] = set(TRANSITIONS[action].values())
    return constant_sql(status)


RENEWABLE = in_list(RENEWING)
# The sweep takes a running job once its lease lapsed, a queued one once its message should
# long have been taken.
_STALE_ONLY_IF = {
    JobStatus.RUNNING: "lease_expires_at < now()",
    JobStatus.QUEUED: "queued_at < now() - make_interval(secs => :requeue_after)",
}
DECLINES = (Outcome.DECLINED_SOFT, Outcome.DECLINED_HARD)

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
      WHERE s.id = due.id AND s.status IN {RENEWABLE}
        AND s.current_period_end = due.current_period_end
      FOR UPDATE SKIP LOCKED
    ) s
    ORDER BY due.turn, due.current_period_end
    """
_NO_OPEN_JOB = f"""NOT EXISTS (SELECT 1 FROM rebill.rebill_jobs j WHERE j.subscription_id = s.id
                        AND j.status IN {in_list(UNSETTLED)})"""
# A round's candidates, read from two indexes so that its cost follows the batch, not the
# number of subscriptions: at most a batch per merchant on real time (the merchants found by
# a skip scan, each one's due subscriptions an index range ending now) and a batch per test
# clock (a range ending at its frozen time). A plain scan had to read every renewable
# subscription and number every due one on each batch: quadratic in a renewal wave.
_ALL_CANDIDATES = f"""
    WITH RECURSIVE merchants AS (
      (SELECT s.merchant_id FROM rebill.subscriptions s
       WHERE s.status IN {RENEWABLE} AND s.test_clock IS NULL
       ORDER BY s.merchant_id LIMIT 1)
      UNION ALL
      SELECT (SELECT s.merchant_id FROM rebill.subscriptions s
              WHERE s.status IN {RENEWABLE} AND s.test_clock IS NULL
                AND s.merchant_id > m.merchant_id
              ORDER BY s.merchant_id LIMIT 1)
      FROM merchants m WHERE m.merchant_id IS NOT NULL
    ), candidates AS (
      SELECT d.* FROM merchants m CROSS JOIN LATERAL (
        SELECT s.id, s.merchant_id, s.current_period_end FROM rebill.subscriptions s
        WHERE s.merchant_id = m.merchant_id AND s.status IN {RENEWABLE}
          AND s.test_clock IS NULL AND s.current_period_end <= now() AND {_NO_OPEN_JOB}
        ORDER BY s.current_period_end, s.id LIMIT :batch
      ) d
      UNION ALL
      SELECT d.* FROM rebill.test_clocks c CROSS JOIN LATERAL (
        SELECT s.id, s.merchant_id, s.current_period_end FROM rebill.subscriptions s
        WHERE s.test_clock = c.id AND s.status IN {RENEWABLE}
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
      WHERE s.id = ANY(CAST(:ids AS varchar[])) AND s.status IN {RENEWABLE}
        AND s.current_period_end <= coalesce(c.frozen_time, now()) AND {_NO_OPEN_JOB}
    )"""
DUE = text(_DUE_SQL.format(candidates=_ALL_CANDIDATES, RENEWABLE=RENEWABLE))
DUE_AMONG = text(_DUE_SQL.format(candidates=_CANDIDATES_AMONG, RENEWABLE=RENEWABLE))

# The batch's subscriptions move to their next period, and each period's job is created,
# queued (its message follows in the outbox): one statement.
ADVANCE = text(
    f"""
    WITH p AS (
      SELECT * FROM jsonb_to_recordset(CAST(:periods AS jsonb)) AS p(
        subscription_id text, job_id text, queue text, number integer, start timestamptz,
        "end" timestamptz)
    ), advanced AS (
      UPDATE rebill.subscriptions s SET status = {constant_sql(Status.ACTIVE)},
        period_number = p.number,
        current_period_start = p.start, current_period_end = p."end", updated_at = now()
      FROM p WHERE s.id = p.subscription_id
      RETURNING s.id, s.merchant_id, s.livemode, s.test_clock, s.amount, s.currency
    )
    INSERT INTO rebill.rebill_jobs (id, subscription_id, merchant_id, livemode, test_clock,
      queue, period_number, period_start, period_end, amount, currency, status, due_at,
      queued_at)
    SELECT p.job_id, a.id, a.merchant_id, a.livemode, a.test_clock, p.queue, p.number,
      p.start, p."end", a.amount, a.currency, {constant_sql(JobStatus.QUEUED)}, p.start, now()
    FROM p JOIN advanced a ON a.id = p.subscription_id
    ON CONFLICT DO NOTHING
    RETURNING *
    """
)

# Declined periods whose next attempt is due on their clock.
RETRIES_DUE = text(
    f"""
    UPDATE rebill.rebill_jobs j SET status = {target(JobAction.RETRY_DUE)}, queued_at = now(),
      updated_at = now()
    FROM (
      SELECT j.id FROM rebill.rebill_jobs j LEFT JOIN rebill.test_clocks c ON c.id = j.test_clock
      WHERE {condition(JobAction.RETRY_DUE, "j.status")}
        AND j.due_at <= coalesce(c.frozen_time, now())
      ORDER BY j.due_at LIMIT :batch FOR UPDATE OF j SKIP LOCKED
    ) due WHERE j.id = due.id
    RETURNING j.*
    """
)

# Jobs a worker should hold but nobody does: a lease that stopped beating (the worker died,
# or an unknown outcome is due for another look), or a message that should long have been
# taken (lost with a broker's queue). Re-publishing is safe: a job runs only under a lease,
# and an attempt charges only under its own idempotency key.
STALE = text(
    f"""
    UPDATE rebill.rebill_jobs j SET status = {target(JobAction.RECLAIM)}, queued_at = now(),
           updated_at = now(),
           lease_owner = NULL, lease_expires_at = NULL
    FROM (
      SELECT id FROM rebill.rebill_jobs
      WHERE {condition(JobAction.RECLAIM, only_if=_STALE_ONLY_IF)}
      ORDER BY updated_at LIMIT :batch FOR UPDATE SKIP LOCKED
    ) stale WHERE j.id = stale.id
    RETURNING j.*
    """
)


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
SETTLE = text(
    f"""
    WITH subscription_now AS (
      SELECT status FROM rebill.subscriptions WHERE id = CAST(:subscription_id AS varchar)
      FOR UPDATE
    ), settled AS (
      UPDATE rebill.rebill_jobs SET
        status = CAST(:status AS varchar), updated_at = now(), lease_owner = NULL,
        lease_expires_at = CASE WHEN CAST(:status AS varchar) = {constant_sql(JobStatus.RUNNING)}
          THEN now() + make_interval(secs => CAST(:recheck AS double precision)) END,
        attempt = coalesce(CAST(:next_attempt AS integer), attempt),
        attempt_runs = CASE WHEN CAST(:next_attempt AS integer) IS NULL THEN attempt_runs
          ELSE 0 END,
        due_at = CASE WHEN CAST(:next_attempt AS integer) IS NULL THEN due_at
          ELSE CAST(:next_attempt_at AS timestamptz) END,
        payment_intent = coalesce(nullif(CAST(:payment_intent AS varchar), ''), payment_intent)
      WHERE id = CAST(:job_id AS varchar) AND lease_owner = CAST(:owner AS varchar)
        AND status = ANY(CAST(:from_statuses AS varchar[]))
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
      WHERE a.outcome = {constant_sql(Outcome.UNKNOWN)}
    ), sub AS (
      UPDATE rebill.subscriptions s SET updated_at = now(),
        next_attempt_at = CAST(:next_attempt_at AS timestamptz),
        status = coalesce(CAST(:subscription_status AS varchar), s.status),
        canceled_at = CASE WHEN CAST(:subscription_status AS varchar)
                               = {constant_sql(Status.CANCELED)} THEN now()
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
CLAIM = text(
    f"""
    WITH leased AS (
      UPDATE rebill.rebill_jobs j SET status = {target(JobAction.CLAIM)},
        lease_owner = CAST(:owner AS varchar),
        lease_expires_at = now() + make_interval(secs => CAST(:lease AS double precision)),
        heartbeat_at = now(), runs = runs + 1, attempt_runs = attempt_runs + 1,
        payment_method = CASE WHEN j.attempt_runs = 0 OR j.payment_method IS NULL
          THEN (SELECT s.payment_method FROM rebill.subscriptions s WHERE s.id = j.subscription_id)
          ELSE j.payment_method END,
        updated_at = now()
      WHERE id = ANY(CAST(:job_ids AS varchar[]))
        AND {condition(JobAction.CLAIM, only_if={JobStatus.RUNNING: "lease_expires_at < now()"})}
      RETURNING *
    )
    SELECT leased.*, s.status AS subscription_status,
      CASE WHEN leased.test_clock IS NOT NULL THEN leased.period_start
           WHEN leased.attempt = 1 THEN now()
           ELSE coalesce((SELECT a.at FROM rebill.rebill_attempts a
                          WHERE a.job_id = leased.id AND a.attempt = 1), leased.period_start)
      END AS first_attempt_at,
      (SELECT count(*) FROM rebill.rebill_attempts a WHERE a.job_id = leased.id
         AND a.attempt < leased.attempt AND a.outcome IN {in_list(DECLINES)}
      ) AS declined_before,
      p.retry_after_days AS policy_retry_after_days, p.final_status AS policy_final_status
    FROM leased JOIN rebill.subscriptions s ON s.id = leased.subscription_id
    LEFT JOIN rebill.retry_policies p ON p.merchant_id = leased.merchant_id
    """
)
