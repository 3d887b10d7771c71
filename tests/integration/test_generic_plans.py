"""The hot statements keep their indexes once PostgreSQL plans them generically.

psycopg prepares a statement on the server after a few runs, and PostgreSQL may then plan it
once for any parameters. A generic plan cannot prove a parameter equal to a partial index's
constant (`state = 'running'`), so such a statement fell back to scanning the whole table:
the settle of every keyed payment scanned all idempotency keys (9.5 ms a call after 10,000
renewals). These tests plan the statements as the server does after that point."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from gateway_svc.repository import intents, statements
from paymesh.platform.direct_sql import compile_statement
from tests.support.mesh import migrated_database

pytestmark = pytest.mark.integration

ROWS = 5000


@pytest.fixture(scope="module")
def db():
    with (
        migrated_database("paymesh_generic_plans") as infra,
        psycopg.connect(infra.database_url, autocommit=True) as connection,
    ):
        # Many settled keys and intents, as after a day of payments; none still running.
        connection.execute(
            "INSERT INTO gateway.idempotency_keys"
            " (merchant_id, livemode, key, request_hash, state, object_id)"
            " SELECT 'acct_plans', false, 'k' || g, 'h', 'done', 'pi_' || g"
            " FROM generate_series(1, %s) g",
            (ROWS,),
        )
        connection.execute("ANALYZE gateway.idempotency_keys")
        connection.execute("SET plan_cache_mode = force_generic_plan")
        yield connection


def generic_plan(connection: psycopg.Connection, statement) -> str:
    """EXPLAIN of `statement`'s generic plan, as the server runs it once prepared."""
    compiled = compile_statement(statement, psycopg_dialect.dialect())
    connection.execute("DEALLOCATE ALL")
    connection.execute(f"PREPARE hot AS {compiled.sql}")
    nulls = ", ".join(["NULL"] * len(compiled.names))
    rows = connection.execute(f"EXPLAIN EXECUTE hot({nulls})").fetchall()
    return "\n".join(row[0] for row in rows)


def assert_finds_waiting_keys_by_index(plan: str) -> None:
    assert "Seq Scan on idempotency_keys" not in plan, plan
    assert "idempotency_keys_open_object_idx" in plan, plan


@pytest.mark.parametrize("bind", [False, True], ids=["settle", "settle-and-bind"])
def test_settling_an_outcome_finds_waiting_keys_by_index(db, bind):
    statement = intents.change_statement(
        ("status", "amount_received"),
        pending_key=False,
        attempt_key=True,
        no_pending=False,
        audits=1,
        event=True,
        bind=bind,
        settles=True,
    )
    assert_finds_waiting_keys_by_index(generic_plan(db, statement))


def test_the_sweep_settles_waiting_keys_by_index(db):
    assert_finds_waiting_keys_by_index(
        generic_plan(db, statements.settle_keys("acct_plans", "pi_1"))
    )
