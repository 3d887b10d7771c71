"""Statements that apply a batch of rows (one JSON parameter read by jsonb_to_recordset) find
the rows they change by index, however stale the table's statistics are.

PostgreSQL estimates a jsonb_to_recordset at 100 rows, so while a table's statistics say it
is small (it grew since the last ANALYZE: a new deployment, a burst) the planner joins the
batch to the whole table with a hash: webhook_svc's inbox settle read every PSP event ever
received, 4 ms a call at 8,000 and growing, a third of the database's time in a rebill run.
Each statement now also names the batch's keys as `= ANY(ARRAY(…))`, an index condition
whatever the estimates. That was not enough where the statement is prepared: the server kept
the plan it made while the inbox was new (a sequential scan of a few pages), and read all of
a grown inbox with it, 3.3 ms a settle in a rebill run; the settle is now planned per call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql, compile_statement
from rebill_svc.jobs import statements
from tests.support.mesh import migrated_database
from tests.support.plans import rows_read, seq_scanned
from webhook_svc.inbound import inbox as psp_inbox
from webhook_svc.inbound import recorded
from webhook_svc.outbound import delivery_store

pytestmark = pytest.mark.integration

ANALYZED = 200  # the rows the table held when its statistics were taken
GROWN = 20_000  # the rows it holds now


@pytest.fixture(scope="module")
def infra():
    with migrated_database("paymesh_batch_plans") as created:
        yield created


@pytest.fixture(scope="module")
def db(infra):
    with psycopg.connect(infra.database_url, autocommit=True) as connection:
        yield connection


def grow(db: psycopg.Connection, table: str, add_rows: Callable[[int, int], None]) -> None:
    """`table` analyzed at ANALYZED rows, then grown to GROWN without a new ANALYZE."""
    db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    add_rows(1, ANALYZED)
    db.execute(f"ANALYZE {table}")
    add_rows(ANALYZED + 1, GROWN)


def plans(db: psycopg.Connection, statement, params: dict) -> dict[str, dict]:
    """EXPLAIN ANALYZE of `statement` (rolled back), planned for its parameters and as the
    server plans it once prepared (generic)."""
    compiled = compile_statement(statement, psycopg_dialect.dialect())
    values = compiled.params(params)
    db.execute("DEALLOCATE ALL")
    db.execute(sql.SQL("PREPARE batch AS {}").format(sql.SQL(compiled.sql)))
    arguments = sql.SQL(", ").join(sql.Literal(value) for value in values)
    found = {}
    for mode in ("force_custom_plan", "force_generic_plan"):
        with db.transaction(force_rollback=True):
            db.execute(sql.SQL("SET LOCAL plan_cache_mode = {}").format(sql.SQL(mode)))
            explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE batch({})")
            (plan,) = db.execute(explain.format(arguments)).fetchone()
            found[mode] = plan[0]["Plan"]
    return found


def assert_reads_only_the_batch(found: dict[str, dict], table: str) -> None:
    for mode, plan in found.items():
        assert table not in seq_scanned(plan), mode
        assert rows_read(plan, table) < 50, (mode, rows_read(plan, table))


def test_settling_psp_events_reads_only_the_batch(db):
    def add(first: int, last: int) -> None:
        db.execute(
            "INSERT INTO webhook.psp_inbox (psp, event_id, event_type, psp_created_at, status,"
            " payload) SELECT 'sandbox', 'evt_' || g, 'charge.captured', now(),"
            " CASE WHEN g %% 1000 = 0 THEN 'received' ELSE 'applied' END, '{}'"
            " FROM generate_series(%s::int, %s::int) g",
            (first, last),
        )

    grow(db, "webhook.psp_inbox", add)
    outcomes = [
        {
            "psp": "sandbox",
            "event_id": f"evt_{n}",
            "status": "applied",
            "reason": None,
            "payment_intent": "pi_1",
        }
        for n in (1000, 5000, 19000)
    ]
    found = plans(db, psp_inbox._SETTLE, {"outcomes": json.dumps(outcomes)})
    assert_reads_only_the_batch(found, "psp_inbox")


def test_settling_psp_events_reads_only_the_batch_after_the_inbox_grew_under_a_cached_plan(
    infra, db
):
    """As a rebill run or a burst meets it: the service settles events while the inbox is new
    and small (psycopg prepares the statement and the server keeps a plan made for a small
    table), then the inbox grows faster than autovacuum analyzes it."""
    db.execute("TRUNCATE webhook.psp_inbox")  # as migrated: empty, never analyzed
    db.execute("ALTER TABLE webhook.psp_inbox SET (autovacuum_enabled = false)")

    def add(first: int, last: int) -> None:
        db.execute(
            "INSERT INTO webhook.psp_inbox (psp, event_id, event_type, psp_created_at, status,"
            " payload) SELECT 'sandbox', 'evt_' || g, 'charge.captured', now(), 'received', '{}'"
            " FROM generate_series(%s::int, %s::int) g",
            (first, last),
        )

    def scans() -> tuple[int, int]:
        return db.execute(
            "SELECT seq_scan, idx_scan FROM pg_stat_user_tables"
            " WHERE schemaname = 'webhook' AND relname = 'psp_inbox'"
        ).fetchone()

    async def settle_small_then_grown() -> tuple[tuple[int, int], tuple[int, int], bool]:
        engine = create_engine(infra.database_url, 2)
        direct = DirectSql(engine, 1)  # one server session: the one that keeps its plans
        inbox = psp_inbox.Inbox(direct)
        flush = text("SELECT pg_stat_force_next_flush()")  # this session's counts, now
        try:
            add(1, 40)
            # psycopg prepares a statement on its 6th run, the server plans it generically
            # from the prepared statement's 6th: 20 runs go well past both.
            for n in range(1, 21):
                assert await inbox.settle("sandbox", f"evt_{n}", "applied", "", "pi_1")
            add(41, GROWN)
            await direct.all(flush, {})
            before = scans()
            settled = await inbox.settle("sandbox", f"evt_{GROWN - 7}", "applied", "", "pi_1")
            await direct.all(flush, {})
            return before, scans(), settled
        finally:
            await direct.close()
            await engine.dispose()

    before, after, settled = asyncio.run(settle_small_then_grown())
    assert settled
    assert (after[0] - before[0], after[1] - before[1]) == (0, 1)  # by index, not all of it


def test_advancing_a_batch_of_periods_reads_only_the_batch(db):
    def add(first: int, last: int) -> None:
        db.execute(
            "INSERT INTO rebill.subscriptions (id, merchant_id, livemode, payment_method,"
            " amount, currency, interval, interval_count, billing_cycle_anchor, status,"
            " period_number, current_period_start, current_period_end)"
            " SELECT 'sub_' || g, 'acct_plans', false, 'pm_1', 1000, 'usd', 'month', 1,"
            " '2030-01-01', 'active', 0, '2030-01-01', '2030-02-01'"
            " FROM generate_series(%s::int, %s::int) g",
            (first, last),
        )

    grow(db, "rebill.subscriptions", add)
    periods = [
        {
            "subscription_id": f"sub_{n}",
            "job_id": f"rj_{n}",
            "queue": "rebill.monthly",
            "number": 1,
            "start": "2030-02-01T00:00:00Z",
            "end": "2030-03-01T00:00:00Z",
        }
        for n in (7, 5000, 19000)
    ]
    found = plans(db, statements.ADVANCE, {"periods": json.dumps(periods)})
    assert_reads_only_the_batch(found, "subscriptions")


def test_recording_delivery_outcomes_reads_only_the_batch(db):
    db.execute(
        "INSERT INTO webhook.webhook_endpoints (id, merchant_id, livemode, url,"
        " enabled_events, status, signature_scheme, secret)"
        " VALUES ('we_plans', 'acct_plans', false, 'https://example.com/hook', '{*}',"
        " 'enabled', 'v1', 'secret')"
    )

    def add(first: int, last: int) -> None:
        db.execute(
            "INSERT INTO webhook.events (id, type, merchant_id, livemode, object_type,"
            " object_id, sequence, object, created_at)"
            " SELECT 'evt_' || g, 'payment_intent.succeeded', 'acct_plans', false,"
            " 'payment_intent', 'pi_' || g, 1, '{}', now()"
            " FROM generate_series(%s::int, %s::int) g",
            (first, last),
        )
        db.execute(
            "INSERT INTO webhook.deliveries (id, event_id, endpoint_id, status, lease_token)"
            " OVERRIDING SYSTEM VALUE SELECT g, 'evt_' || g, 'we_plans', 'pending', 'lease_' || g"
            " FROM generate_series(%s::int, %s::int) g",
            (first, last),
        )

    grow(db, "webhook.deliveries", add)
    outcomes = [
        {
            "delivery_id": n,
            "lease_token": f"lease_{n}",
            "event_id": f"evt_{n}",
            "endpoint_id": "we_plans",
            "url": "https://example.com/hook",
            "attempt": 1,
            "kind": "succeeded",
            "next_in_seconds": None,
            "status_code": 200,
            "duration_ms": 3,
            "error": None,
        }
        for n in (9, 5000, 19000)
    ]
    found = plans(
        db, delivery_store._RECORD, {"outcomes": json.dumps(outcomes), "disable_after": 3600}
    )
    assert_reads_only_the_batch(found, "deliveries")


def test_finding_the_recorded_successes_psp_webhooks_echo_reads_only_the_batch(db):
    def add(first: int, last: int) -> None:
        db.execute(
            "INSERT INTO webhook.events (id, type, merchant_id, livemode, object_type,"
            " object_id, sequence, object, created_at, psp_reference)"
            " SELECT 'evt_echo_' || g, 'payment_intent.succeeded', 'acct_plans', false,"
            " 'payment_intent', 'pi_echo_' || g, g, '{}', now(), 'ch_echo_' || g"
            " FROM generate_series(%s::int, %s::int) g",
            (first, last),
        )

    grow(db, "webhook.events", add)
    references = [{"reference": f"ch_echo_{n}"} for n in (9, 5000, 19000)]
    found = plans(db, recorded._SUCCESSES, {"references": json.dumps(references)})
    assert_reads_only_the_batch(found, "events")
