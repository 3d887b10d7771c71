"""A mesh behind pgbouncer in transaction mode: the data path (DATABASE_URL) goes through
Debian's pgbouncer 1.18, which cannot carry server-side prepared statements, and whose server
connections serve another client after every transaction; the session state (the leaders'
advisory locks, LISTEN) goes straight to PostgreSQL (DATABASE_DIRECT_URL). Payments, a
test-clock renewal, a merchant webhook and every outbox relay work through it.

One mesh, a few requests: the suite's time budget is tight."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.support.fault_mesh import fault_mesh
from tests.support.payments import pay
from tests.support.pgbouncer import Pgbouncer, running_pgbouncer
from tests.support.rebill import advance, new_clock, rebills, subscribe
from tests.support.receiver import running_receiver
from tests.support.waiting import wait_until
from tests.support.webhooks import WEBHOOK_ENV, Hooks, verified

pytestmark = pytest.mark.integration

OUTBOXES = ("gateway", "vault", "rebill", "webhook")


@pytest.fixture(scope="module")
def behind(tmp_path_factory) -> Iterator[tuple[Hooks, Pgbouncer]]:
    """A mesh whose data path is pgbouncer (4 server connections for the whole mesh) and whose
    session connections go straight to PostgreSQL, and a webhook receiver."""
    with (
        running_pgbouncer(pool_size=4) as bouncer,
        running_receiver() as receiver,
        fault_mesh(
            tmp_path_factory.mktemp("pgbouncer"),
            lambda infra: {
                "DATABASE_URL": bouncer.url(infra.database_url),
                "DATABASE_DIRECT_URL": infra.database_url,
            },
            **WEBHOOK_ENV,
        ) as faults,
    ):
        yield Hooks(faults, receiver), bouncer


def pooled_backends(bouncer: Pgbouncer) -> set[int]:
    """PostgreSQL's client ports of pgbouncer's server connections."""
    servers = bouncer.show("SERVERS")
    # SHOW SERVERS: type, user, database, state, addr, port, local_addr, local_port, …
    return {row[7] for row in servers}


def test_payments_renewals_webhooks_and_relays_work_through_pgbouncer(behind):
    hooks, bouncer = behind
    faults = hooks.faults
    mesh, merchant = faults.mesh, faults.merchant
    endpoint = hooks.endpoint(merchant, "/pgbouncer", events=["payment_intent.succeeded"])

    # Past psycopg's prepare threshold (5 runs of a statement on a connection) on every pool.
    intents = [pay(mesh, merchant, amount=1000 + n) for n in range(8)]

    assert [i.status for i in intents] == [200] * 8, [i.body for i in intents]
    assert {i.body["status"] for i in intents} == {"succeeded"}

    # A renewal on a test clock: the scheduler (a leader), the rebill relay, a worker.
    start = datetime(2030, 1, 15, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    created = subscribe(mesh, merchant, 31001, test_clock=clock)
    assert created.status == 200, created.body
    advance(mesh, merchant, clock, datetime(2030, 2, 16, tzinfo=UTC), timeout=60)
    attempts = rebills(mesh, merchant, created.body["id"])
    assert [a["outcome"] for a in attempts] == ["succeeded", "succeeded"], attempts

    # The gateway's relay → webhook_svc's intake → the deliverer → the merchant (the
    # renewals' own payments are delivered too).
    ours = {i.body["id"] for i in intents}

    def delivered() -> set[str]:
        requests = hooks.receiver.at("/pgbouncer")
        return {verified(endpoint["secret"], r)["data"]["object"]["id"] for r in requests}

    wait_until(lambda: ours <= delivered(), timeout=20)

    # Every relay emptied its outbox.
    for schema in OUTBOXES:
        wait_until(
            lambda s=schema: (
                faults.scalar(
                    f"SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL"  # noqa: S608
                )
                == 0
            ),
            timeout=10,
        )

    # Session state lives on direct connections only, one holder per lock; every other
    # connection of the mesh goes through pgbouncer.
    pooled = pooled_backends(bouncer)
    locks = faults.rows(
        "SELECT l.objid, a.client_port, a.application_name FROM pg_locks l"
        " JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.database ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    assert len(locks) >= 4, locks  # at least each service's outbox relay
    assert len({objid for objid, _, _ in locks}) == len(locks), locks
    assert not [lock for lock in locks if lock[1] in pooled], locks
    direct = faults.rows(
        "SELECT application_name, client_port FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert [name for name, port in direct if port not in pooled and ":session" not in name] == []
