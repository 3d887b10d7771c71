"""The hash-chained audit tables under concurrency: each merchant's rows form several chains
(a transaction's rows all in one, chosen by its id), so two payments of one merchant do not
wait for each other's audit rows, and `paymesh audit verify` still names a deleted row (an
edited one: test_payments_resilience)."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from paymesh.platform.migration_ops import AUDIT_CHAINS
from tests.conftest import BIN, base_env, migrated_infra

pytestmark = pytest.mark.integration

TABLES = ["gateway.payment_audit", "rebill.rebill_audit"]
CHAIN_OF_TRANSACTION = f"SELECT pg_current_xact_id()::text::bigint % {AUDIT_CHAINS}"
INSERT = (
    "INSERT INTO {table} (merchant_id, actor, action, object_id, result, details)"
    " VALUES (%s, 'api', %s, %s, 'ok', '{{}}') RETURNING id"
)


@pytest.fixture(scope="module")
def database():
    with migrated_infra("paymesh_audit_chains") as infra:
        yield infra, base_env(infra)


def verify(env: dict[str, str]) -> tuple[int, dict]:
    done = subprocess.run(
        [str(BIN / "paymesh"), "audit", "verify"], env=env, capture_output=True, text=True
    )
    return done.returncode, json.loads(done.stdout)


def transaction_in_another_chain(db: psycopg.Connection, taken: int) -> None:
    """Starts a transaction on `db` whose id falls in another chain than the transaction `taken`
    (ids are consecutive, but the mesh's own writers may take AUDIT_CHAINS in between)."""
    while db.execute(CHAIN_OF_TRANSACTION).fetchone()[0] == taken:
        db.rollback()


@pytest.mark.parametrize("table", TABLES)
def test_two_objects_of_one_merchant_do_not_wait_for_each_others_audit_rows(database, table):
    infra, env = database
    merchant = f"acct_wait_{table.split('.')[0]}"
    with (
        psycopg.connect(infra.database_url) as holder,
        psycopg.connect(infra.database_url) as other,
    ):
        holder.execute(INSERT.format(table=table), (merchant, "create", "pi_held"))  # left open
        [taken] = holder.execute(CHAIN_OF_TRANSACTION).fetchone()
        other.execute("SET lock_timeout = '2s'")
        other.commit()
        transaction_in_another_chain(other, taken)
        other.execute(INSERT.format(table=table), (merchant, "create", "pi_other"))
        other.commit()  # did not wait for the holder's commit
        holder.commit()
    assert verify(env) == (0, {"intact": True})


@pytest.mark.parametrize("table", TABLES)
def test_rows_written_by_many_transactions_at_once_verify_each_transaction_in_one_chain(
    database, table
):
    infra, env = database
    merchant = f"acct_many_{table.split('.')[0]}"

    def history(n: int) -> None:
        with psycopg.connect(infra.database_url) as db:  # one transaction: one object's rows
            for action in ("create", "confirm_started", "confirm", "refund"):
                db.execute(INSERT.format(table=table), (merchant, action, f"pi_many{n}"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(history, range(64)))
    assert verify(env) == (0, {"intact": True})
    with psycopg.connect(infra.database_url) as db:
        rows = db.execute(
            f"SELECT object_id, chain, action FROM {table} WHERE merchant_id = %s"
            " ORDER BY object_id, seq",
            (merchant,),
        ).fetchall()
    by_object: dict[str, list] = {}
    for object_id, chain, action in rows:
        by_object.setdefault(object_id, []).append((chain, action))
    assert len(by_object) == 64
    for chained in by_object.values():
        assert len({chain for chain, _ in chained}) == 1  # one transaction, one chain
        assert [action for _, action in chained] == [
            "create",
            "confirm_started",
            "confirm",
            "refund",
        ]
    assert len({chain for _, chain, _ in rows}) > 1  # the merchant's rows are spread


@pytest.mark.parametrize("table", TABLES)
def test_a_deleted_row_is_named_by_the_chain_check(database, table):
    infra, env = database
    merchant = f"acct_deleted_{table.split('.')[0]}"
    with psycopg.connect(infra.database_url) as db:  # one transaction: one chain
        ids = [
            db.execute(INSERT.format(table=table), (merchant, action, "pi_deleted")).fetchone()[0]
            for action in ("create", "confirm_started", "confirm")
        ]
    with psycopg.connect(infra.database_url, autocommit=True) as db:
        # Someone with the owner's rights goes around the append-only trigger:
        db.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            db.execute(f"DELETE FROM {table} WHERE id = %s", (ids[1],))
        finally:
            db.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        code, answer = verify(env)
        assert (code, answer) == (
            1,
            {
                "intact": False,
                "table": table,
                "first_broken_row": ids[2],
                "merchant_id": merchant,
                "problem": "not chained to the previous row",
            },
        )
        # Put back as it was, for the other tests of this module's database:
        db.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            db.execute(f"DELETE FROM {table} WHERE merchant_id = %s", (merchant,))
        finally:
            db.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
