"""The hash-chained audit tables under concurrency: each merchant's rows form several chains
(a transaction's rows all in one, chosen by its id), so two payments of one merchant do not
wait for each other's audit rows, and `paymesh audit verify` still names a deleted row (an
edited one: test_payments_resilience). Signed checkpoints of the chains' heads anchor them:
a superuser who cuts a chain's newest row, or rewrites a row and re-hashes the rest of its
chain with the database's own digest function, is named too. A large payload is stored
compressed, and the chain covers the compressed bytes."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from paymesh.platform.audit_checkpoints import AuditCheckpointer
from paymesh.platform.audit_details import read_details, stored_details
from paymesh.platform.audit_keys import AuditKeys
from paymesh.platform.db import create_engine
from paymesh.platform.migration_ops import AUDIT_CHAINS
from paymesh_ops.cli import AUDIT_TABLES
from tests.support.fault_mesh import made_secrets
from tests.support.mesh import BIN, base_env, migrated_database, paymesh
from tests.support.payments import pay
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TABLES = ["gateway.payment_audit", "rebill.rebill_audit"]
CHAIN_OF_TRANSACTION = f"SELECT pg_current_xact_id()::text::bigint % {AUDIT_CHAINS}"
INSERT = (
    "INSERT INTO {table} (merchant_id, actor, action, object_id, result, details)"
    " VALUES (%s, 'api', %s, %s, 'ok', '{{}}') RETURNING id"
)


@pytest.fixture(scope="module")
def database():
    with migrated_database("paymesh_audit_chains") as infra:
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
        [chain] = db.execute(f"SELECT chain FROM {table} WHERE id = %s", (ids[0],)).fetchone()
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
                "chain": chain,
                "problem": "not chained to the previous row",
            },
        )
        # Put back as it was, for the other tests of this module's database:
        db.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            db.execute(f"DELETE FROM {table} WHERE merchant_id = %s", (merchant,))
        finally:
            db.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


@pytest.fixture
def own_database(tmp_path):
    """A database of this test's own (its tampers stay in it), with an audit key (a copy of
    the keys `paymesh keys init` made once for the test run: a Python start spared)."""
    with migrated_database("paymesh_audit_tamper") as infra:
        shutil.copytree(made_secrets() / "keys", tmp_path / "keys")
        yield infra, base_env(infra, PAYMESH_KEYS_DIR=str(tmp_path / "keys"))


def sign_heads(env: dict[str, str]) -> None:
    """Signs every chain's head now: what `paymesh audit checkpoint` does (the same
    checkpointer over the same tables, with the keys of env's PAYMESH_KEYS_DIR), in this
    process (a command line would cost a Python start, seconds on a busy machine, each)."""

    async def sign() -> None:
        keys = AuditKeys.load(Path(env["PAYMESH_KEYS_DIR"]))
        engine = create_engine(env["DATABASE_URL"], pool_size=1)
        try:
            for table in AUDIT_TABLES:
                await AuditCheckpointer(engine, table, keys, interval=0).checkpoint()
        finally:
            await engine.dispose()

    asyncio.run(sign())


def chained_rows(
    database_url: str, table: str, merchant: str, actions, sign: Callable[[], object] | None = None
) -> list[int]:
    """One row per action, each in a transaction of its own, all in one chain; with `sign`, the
    chains' heads are signed after each row (as the owning service does every few seconds)."""
    ids = []
    with psycopg.connect(database_url) as db:
        chain = None
        for action in actions:
            while chain is not None and db.execute(CHAIN_OF_TRANSACTION).fetchone()[0] != chain:
                db.rollback()
            [chain] = db.execute(CHAIN_OF_TRANSACTION).fetchone()
            ids.append(
                db.execute(INSERT.format(table=table), (merchant, action, "pi_t")).fetchone()[0]
            )
            db.commit()
            if sign is not None:
                sign()
    return ids


def as_superuser_around_the_triggers(database_url: str, *statements: tuple[str, tuple]) -> None:
    """What someone with the database's superuser does: no append-only trigger fires."""
    with psycopg.connect(database_url) as db:
        db.execute("SET session_replication_role = replica")
        for statement, parameters in statements:
            db.execute(statement, parameters)


def chain_of(database_url: str, table: str, row_id: int) -> int:
    with psycopg.connect(database_url) as db:
        return db.execute(f"SELECT chain FROM {table} WHERE id = %s", (row_id,)).fetchone()[0]


def checkpoint_of(database_url: str, table: str, row_id: int) -> int:
    with psycopg.connect(database_url) as db:
        return db.execute(
            f"SELECT max(id) FROM {table}_checkpoints WHERE row_id = %s", (row_id,)
        ).fetchone()[0]


@pytest.mark.parametrize("table", TABLES)
def test_a_chains_deleted_newest_row_is_named_by_its_checkpoint(own_database, table):
    infra, env = own_database
    actions = ["create", "confirm"]
    ids = chained_rows(infra.database_url, table, "acct_tail", actions, lambda: sign_heads(env))
    assert verify(env) == (0, {"intact": True})
    chain = chain_of(infra.database_url, table, ids[-1])
    checkpoint = checkpoint_of(infra.database_url, table, ids[-1])

    as_superuser_around_the_triggers(
        infra.database_url, (f"DELETE FROM {table} WHERE id = %s", (ids[-1],))
    )

    assert verify(env) == (
        1,
        {
            "intact": False,
            "table": table,
            "first_broken_row": ids[-1],
            "merchant_id": "acct_tail",
            "chain": chain,
            "problem": f"missing: checkpoint {checkpoint} vouches for it (seq 2)",
        },
    )


@pytest.mark.parametrize("table", TABLES)
def test_a_row_edited_and_its_chain_rehashed_by_the_database_is_named_by_the_checkpoints(
    own_database, table
):
    infra, env = own_database
    actions = ["create", "confirm_started", "confirm"]
    ids = chained_rows(infra.database_url, table, "acct_rehash", actions, lambda: sign_heads(env))
    assert verify(env) == (0, {"intact": True})
    chain = chain_of(infra.database_url, table, ids[1])
    digest = f"{table}_digest(a.prev_hash, a)"

    as_superuser_around_the_triggers(
        infra.database_url,
        (f"UPDATE {table} SET result = 'declined' WHERE id = %s", (ids[1],)),
        (f"UPDATE {table} a SET hash = {digest} WHERE id = %s", (ids[1],)),
        (
            f"UPDATE {table} SET prev_hash = (SELECT hash FROM {table} WHERE id = %s)"
            " WHERE id = %s",
            (ids[1], ids[2]),
        ),
        (f"UPDATE {table} a SET hash = {digest} WHERE id = %s", (ids[2],)),
    )

    rewritten = {
        "intact": False,
        "table": table,
        "first_broken_row": ids[1],  # the row after the last checkpoint that still holds
        "merchant_id": "acct_rehash",
        "chain": chain,
    }
    checkpoint = checkpoint_of(infra.database_url, table, ids[1])
    assert verify(env) == (
        1,
        {
            **rewritten,
            "problem": f"rewritten: rows from seq 2 to 2 do not hash to checkpoint {checkpoint}",
        },
    )

    # Re-hashing the checkpoints too takes the key, which the database does not hold:
    as_superuser_around_the_triggers(
        infra.database_url,
        (
            f"UPDATE {table}_checkpoints c SET hash = a.hash FROM {table} a"
            " WHERE a.id = c.row_id AND c.row_id IN (%s, %s)",
            (ids[1], ids[2]),
        ),
    )
    assert verify(env) == (
        1,
        {**rewritten, "problem": f"its checkpoint {checkpoint} does not verify with key k1"},
    )


def test_checkpoints_signed_before_a_key_rotation_still_verify(own_database):
    infra, env = own_database
    table = "gateway.payment_audit"
    chained_rows(infra.database_url, table, "acct_rotate", ["create"], lambda: sign_heads(env))
    assert json.loads(paymesh("keys", "rotate-audit", env=env)) == {"audit_key": "k2"}
    # Signed after the rotation by the command line an operator runs:
    chained_rows(
        infra.database_url,
        table,
        "acct_rotate",
        ["confirm"],
        lambda: paymesh("audit", "checkpoint", env=env),
    )
    with psycopg.connect(infra.database_url) as db:
        signers = [r[0] for r in db.execute(f"SELECT key_id FROM {table}_checkpoints ORDER BY id")]
    assert signers == ["k1", "k2"]
    assert verify(env) == (0, {"intact": True})


AGE = re.compile(r'^audit_chain_head_checkpoint_age_seconds\{table="([a-z_.]+)"\} (\S+)$', re.M)


def checkpoint_ages(ops_ports) -> dict[str, float]:
    """The age each process that checkpoints a table reports, by table."""
    ages = {}
    for port in ops_ports:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our URL
            ages.update({t: float(v) for t, v in AGE.findall(response.read().decode())})
    return ages


def test_a_normal_day_is_anchored_and_the_checkpoint_age_shows_a_stalled_checkpointer(
    infra, mesh, merchant
):
    ports = [http for _, http in mesh.ports.gateways] + [mesh.ports.http["rebill"]]
    intent = pay(mesh, merchant).body
    assert intent["status"] == "succeeded"
    with psycopg.connect(infra.database_url, autocommit=True) as db:

        def anchored() -> bool:
            return db.execute(
                "SELECT bool_and(EXISTS (SELECT 1 FROM gateway.payment_audit_checkpoints c"
                " WHERE c.merchant_id = a.merchant_id AND c.chain = a.chain AND c.seq >= a.seq))"
                " FROM gateway.payment_audit a WHERE a.object_id = %s",
                (intent["id"],),
            ).fetchone()[0]

        wait_until(anchored, timeout=10)
        ages = wait_until(lambda: (a := checkpoint_ages(ports)) and len(a) == 2 and a, timeout=10)
        assert set(ages) == {"gateway.payment_audit", "rebill.rebill_audit"}
        assert all(age < 3 for age in ages.values())  # interval 1 s in tests

        with psycopg.connect(infra.database_url) as staller:  # the checkpointer's rounds wait
            staller.execute("LOCK TABLE gateway.payment_audit_checkpoints IN ACCESS EXCLUSIVE MODE")
            stalled = wait_until(
                lambda: checkpoint_ages(ports)["gateway.payment_audit"] > 4, timeout=10
            )
            # Its age goes on growing: no round completes while the table is locked.
            wait_until(
                lambda: checkpoint_ages(ports)["gateway.payment_audit"] > stalled, timeout=10
            )
            assert checkpoint_ages(ports)["rebill.rebill_audit"] < 3  # the other table's own
            staller.rollback()
        wait_until(lambda: checkpoint_ages(ports)["gateway.payment_audit"] < 2, timeout=10)
    assert json.loads(paymesh("audit", "verify", env=base_env(infra))) == {"intact": True}


@pytest.mark.parametrize("table", TABLES)
def test_a_large_payload_is_stored_compressed_and_the_chain_covers_the_stored_bytes(
    database, table
):
    infra, env = database
    merchant = f"acct_large_{table.split('.')[0]}"
    details = {"lines": [f"line {i}: the customer's refund reason, again " * 3 for i in range(200)]}
    stored, compressed = stored_details(details, above=4096)
    assert compressed is not None
    with psycopg.connect(infra.database_url) as db:
        [row_id] = db.execute(
            f"INSERT INTO {table} (merchant_id, actor, action, object_id, result, details,"
            " details_z) VALUES (%s, 'api', 'refund', 're_large', 'ok', %s, %s) RETURNING id",
            (merchant, Jsonb(stored), compressed),
        ).fetchone()
        small = db.execute(INSERT.format(table=table), (merchant, "create", "pi_small")).fetchone()
    with psycopg.connect(infra.database_url) as db:
        row = db.execute(f"SELECT details, details_z FROM {table} WHERE id = %s", (row_id,))
        kept, kept_z = row.fetchone()
        [small_z] = db.execute(
            f"SELECT details_z FROM {table} WHERE id = %s", (small[0],)
        ).fetchone()
    assert small_z is None  # a small payload stays as it is
    assert len(kept_z) * 4 < len(json.dumps(details))
    assert read_details(kept, kept_z) == details
    assert verify(env) == (0, {"intact": True})

    forged = zlib.compress(json.dumps({"lines": ["nothing to see here"]}).encode())
    as_superuser_around_the_triggers(
        infra.database_url, (f"UPDATE {table} SET details_z = %s WHERE id = %s", (forged, row_id))
    )
    code, answer = verify(env)
    # Put back as it was, for the other tests of this module's database:
    as_superuser_around_the_triggers(
        infra.database_url, (f"UPDATE {table} SET details_z = %s WHERE id = %s", (kept_z, row_id))
    )
    assert (code, answer["first_broken_row"], answer["problem"]) == (
        1,
        row_id,
        "content does not match its hash",
    )
    assert verify(env) == (0, {"intact": True})
