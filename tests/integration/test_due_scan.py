"""The scheduler's due scan: what it reads grows with what is due, not with how many
subscriptions there are, and a merchant with a wave of renewals does not starve another.

Before, each batch read every renewable subscription (the bound of "due" depends on the
subscription's clock, so no index range could serve it) and numbered every due one: 43 ms a
batch at 10,000, and quadratic in a renewal wave."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql, compile_statement
from rebill_svc.jobs import statements
from rebill_svc.jobs.postgres import PostgresJobStore
from tests.support.mesh import migrated_database
from tests.support.plans import rows_read, seq_scanned

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
FROZEN = datetime(2031, 6, 1, tzinfo=UTC)
NOT_DUE = 20_000  # renewable subscriptions whose period has not ended, on real time
NOT_DUE_ON_CLOCK = 5_000


@pytest.fixture()
def infra():
    with migrated_database("paymesh_due_scan") as infra:
        yield infra


def add_subscriptions(
    db: psycopg.Connection,
    prefix: str,
    count: int,
    merchants: int,
    period_end: datetime,
    clock: str | None = None,
) -> None:
    """`count` monthly subscriptions, spread over `merchants` merchants, whose current period
    ends at `period_end`."""
    db.execute(
        """
        INSERT INTO rebill.subscriptions (id, merchant_id, livemode, payment_method, amount,
          currency, interval, interval_count, billing_cycle_anchor, test_clock, status,
          period_number, current_period_start, current_period_end)
        SELECT %(prefix)s || lpad(g::text, 6, '0'), 'acct_' || %(prefix)s || (g %% %(m)s),
          false, 'pm_scan', 1000, 'usd', 'month', 1, %(start)s, %(clock)s, 'active', 0,
          %(start)s, %(end)s
        FROM generate_series(1, %(count)s) g
        """,
        {
            "prefix": prefix,
            "m": merchants,
            "count": count,
            "clock": clock,
            "start": period_end - timedelta(days=30),
            "end": period_end,
        },
    )


def add_clock(db: psycopg.Connection, clock: str, merchant: str) -> None:
    db.execute(
        "INSERT INTO rebill.test_clocks (id, merchant_id, livemode, frozen_time)"
        " VALUES (%s, %s, false, %s)",
        (clock, merchant, FROZEN),
    )


def test_the_due_scan_reads_what_is_due_not_every_subscription(infra):
    with psycopg.connect(infra.database_url) as db:
        add_subscriptions(db, "later", NOT_DUE, 40, NOW + timedelta(days=20))
        add_subscriptions(db, "due", 20, 4, NOW - timedelta(hours=1))
        add_clock(db, "clock_scan", "acct_clocked")
        add_clock(db, "clock_idle", "acct_clocked")  # nothing on it is due
        add_subscriptions(
            db, "clocklater", NOT_DUE_ON_CLOCK, 1, FROZEN + timedelta(days=9), "clock_scan"
        )
        add_subscriptions(db, "clockdue", 10, 1, FROZEN - timedelta(days=1), "clock_scan")
        db.commit()
        db.execute("ANALYZE rebill.subscriptions")
        compiled = compile_statement(statements.DUE, psycopg_dialect.dialect())
        args = ", ".join("500" if name == "batch" else "NULL" for name in compiled.names)
        db.execute(f"PREPARE due AS {compiled.sql}")

        due = {row[0] for row in db.execute(f"EXECUTE due({args})").fetchall()}
        db.rollback()  # the scan locks what it found
        assert len(due) == 30
        assert all(s.startswith(("due", "clockdue")) for s in due), due

        # As the server runs it once prepared, too (a generic plan): the ranges still hold.
        for mode in ("force_custom_plan", "force_generic_plan"):
            db.execute(f"SET plan_cache_mode = {mode}")
            (plan,) = db.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE due({args})").fetchone()[
                0
            ]
            db.rollback()
            read = rows_read(plan["Plan"], "subscriptions")
            print(mode, "subscription rows read:", read)
            assert "subscriptions" not in seq_scanned(plan["Plan"]), mode
            # The due rows (found, then locked) and one probe per merchant: not 25,000.
            assert read < 500, (mode, read)


def test_a_merchants_renewal_wave_does_not_starve_the_others(infra):
    """A batch of 10 while one merchant has 300 renewals due: the two other merchants' due
    subscriptions (one on real time, one on a test clock) are in the first batch."""
    with psycopg.connect(infra.database_url) as db:
        add_subscriptions(db, "wave", 300, 1, NOW - timedelta(days=2))
        add_subscriptions(db, "small", 3, 1, NOW - timedelta(hours=1))
        add_clock(db, "clock_fair", "acct_clockfair0")
        add_subscriptions(db, "clockfair", 2, 1, FROZEN - timedelta(days=1), "clock_fair")
        db.commit()

    async def first_batch() -> int:
        engine = create_engine(infra.database_url, 2)
        try:
            return await PostgresJobStore(engine, DirectSql(engine, 1)).schedule_due(10)
        finally:
            await engine.dispose()

    assert asyncio.run(first_batch()) == 10
    with psycopg.connect(infra.database_url) as db:
        by_merchant = dict(
            db.execute(
                "SELECT merchant_id, count(*) FROM rebill.rebill_jobs GROUP BY merchant_id"
            ).fetchall()
        )
        # The workers' messages go out in turns too: each merchant's first, then its second.
        queued = [
            row[0]
            for row in db.execute(
                "SELECT payload->>'merchant_id' FROM rebill.outbox"
                " WHERE event_type LIKE 'rebill_job.%' ORDER BY id"
            ).fetchall()
        ]
    assert by_merchant == {"acct_wave0": 5, "acct_small0": 3, "acct_clockfair0": 2}
    assert len(set(queued[:3])) == 3 and len(set(queued[3:6])) == 3, queued


def test_jobs_claimed_together_are_each_leased_once(infra):
    """A worker's claims made while its last claim is out go in one statement: each job's
    lease goes to one claim, a job claimed twice in it runs once, and a job another worker
    holds is not taken."""
    with psycopg.connect(infra.database_url) as db:
        add_subscriptions(db, "claims", 4, 1, NOW - timedelta(days=2))
        db.commit()

    async def main():
        engine = create_engine(infra.database_url, 2)
        direct = DirectSql(engine, 2)
        store = PostgresJobStore(engine, direct)
        try:
            await store.schedule_due(10)
            with psycopg.connect(infra.database_url) as db:
                ids = [r[0] for r in db.execute("SELECT id FROM rebill.rebill_jobs ORDER BY id")]
            held = await store.claim(ids[3], "worker:other", 30)
            first = asyncio.create_task(store.claim(ids[0], "worker:me", 30))
            await asyncio.sleep(0)  # the next claims wait for this one, then leave together
            together = await asyncio.gather(
                store.claim(ids[1], "worker:me", 30),
                store.claim(ids[2], "worker:me", 30),
                store.claim(ids[2], "worker:me", 30),
                store.claim(ids[3], "worker:me", 30),
            )
            return ids, held, await first, together
        finally:
            await direct.close()
            await engine.dispose()

    ids, held, first, (one, two, two_again, taken) = asyncio.run(main())
    assert held is not None and first.job.id == ids[0]
    assert (one.job.id, two.job.id) == (ids[1], ids[2])
    assert two_again is None and taken is None


def test_a_subscription_whose_next_period_cannot_be_computed_does_not_stop_the_others(infra):
    """A subscription at the calendar's end (written before clocks were bounded, or by hand)
    has no next period. The scheduler sets it aside, logged and counted, and starts every
    other merchant's due period: before, its error rolled back the whole batch, round after
    round."""
    with psycopg.connect(infra.database_url) as db:
        db.execute(
            "INSERT INTO rebill.test_clocks (id, merchant_id, livemode, frozen_time)"
            " VALUES ('clock_end', 'acct_end', false, '9999-12-20T00:00:00Z')"
        )
        db.execute(
            """
            INSERT INTO rebill.subscriptions (id, merchant_id, livemode, payment_method, amount,
              currency, interval, interval_count, billing_cycle_anchor, test_clock, status,
              period_number, current_period_start, current_period_end)
            VALUES ('sub_end', 'acct_end', false, 'pm_end', 1000, 'usd', 'month', 1,
              '9999-11-15T00:00:00Z', 'clock_end', 'active', 0, '9999-11-15T00:00:00Z',
              '9999-12-15T00:00:00Z')
            """
        )
        add_subscriptions(db, "others", 6, 3, NOW - timedelta(hours=1))

    async def rounds() -> list[int]:
        engine = create_engine(infra.database_url, 2)
        try:
            store = PostgresJobStore(engine, DirectSql(engine, 1))
            return [await store.schedule_due(10) for _ in range(2)]
        finally:
            await engine.dispose()

    # The one set aside is no work done: a round that reported it would start another at once.
    assert asyncio.run(rounds()) == [6, 0]
    with psycopg.connect(infra.database_url) as db:
        scheduled = db.execute(
            "SELECT count(*) FILTER (WHERE subscription_id LIKE 'others%%'),"
            " count(*) FILTER (WHERE subscription_id = 'sub_end') FROM rebill.rebill_jobs"
        ).fetchone()
        end = db.execute(
            "SELECT status, current_period_end FROM rebill.subscriptions WHERE id = 'sub_end'"
        ).fetchone()
    assert scheduled == (6, 0)
    assert end == ("active", datetime(9999, 12, 15, tzinfo=UTC))
