"""rebill against a misbehaving broker: a RabbitMQ node crashed and restarted while renewals
flow loses no job and charges no period twice; poison messages land in `rebill.dead` without
stopping their queue, and operators retry or discard them through RebillAdminService.

Each test runs a mesh of its own (own database, own ports, DB_POOL_SIZE=4) with
REBILL_REQUEUE_AFTER_SECONDS far beyond the test: the scheduler's safety net (re-publishing a
job queued too long) never fires, so a job whose message the broker lost stays unsettled and
the test fails instead of being rescued.

The private RabbitMQ node: tests/support/rabbit_cluster.py (what was found running one).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pika
import psycopg
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from dev.devinfra import Infra
from dev.devmesh import Mesh, Ports
from paymesh.platform.service_auth import SERVICE_TOKEN_HEADER, TokenIssuer
from paymesh.rebill.v1 import rebill_admin_pb2, rebill_admin_pb2_grpc
from paymesh_ops.services import ALL as SERVICES
from rebill_svc.topology import DELIVERY_LIMIT
from tests.support.http import call
from tests.support.mesh import TestMerchant, base_env, create_merchant, migrated_infra, started_mesh
from tests.support.payments import post
from tests.support.psp import sandbox
from tests.support.rabbit_cluster import PrivateRabbit, rabbitmq_bin
from tests.support.rabbit_cluster import private_rabbit as private_node
from tests.support.rebill import Progress, charges_of, iso, job_counts, new_clock, subscribe
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

EVENTS_EXCHANGE = "paymesh.events"  # the mesh's default (EVENTS_EXCHANGE)


@pytest.fixture
def private_rabbit(tmp_path) -> Iterator[PrivateRabbit]:
    bin_dir = rabbitmq_bin()
    if bin_dir is None:
        pytest.skip("no rabbitmq-server on this machine to run a private node")
    with private_node(tmp_path / "rabbit", bin_dir, wait=False) as rabbit:
        yield rabbit  # booting: own_mesh waits for it once the database is made


@contextlib.contextmanager
def own_mesh(
    log_dir: Path, broker: PrivateRabbit | None = None, **overrides: str
) -> Iterator[tuple[Mesh, Infra, TestMerchant]]:
    """A whole mesh with a database of its own; jobs queued too long are not re-published.
    On `broker` (a private node, booting while the database is made) when given."""
    if broker is not None:
        overrides["AMQP_URL"] = broker.amqp_url
    ports = Ports.free()
    log_dir.mkdir(parents=True, exist_ok=True)
    with migrated_infra("paymesh_rebill_broker") as own:
        env = base_env(
            own,
            **ports.service_env(),
            DB_POOL_SIZE="4",
            REBILL_WORKER_PREFETCH="8",
            REBILL_REQUEUE_AFTER_SECONDS="3600",
            **overrides,
        )
        merchant = create_merchant(own, "broker")
        if broker is not None:
            broker.wait_started()
        with started_mesh(env, ports, log_dir) as mesh:
            yield mesh, own, merchant


def sql(infra: Infra, statement: str, *params) -> list[tuple]:
    with psycopg.connect(infra.database_url, autocommit=True) as connection:
        return connection.execute(statement, params).fetchall()


def clock_status(mesh, merchant, clock: str) -> str | None:
    """The clock's status through Envoy; None while the API does not answer (the broker is
    down and Envoy may have taken the services out)."""
    response = call(mesh.url(f"/v1/test_clocks/{clock}"), "GET", merchant.auth())
    return response.body["status"] if response.status == 200 else None


SUBSCRIPTIONS = 200
DAYS = 4
FIRST_AMOUNT = 6000


@pytest.mark.timeout(900)
def test_a_broker_crash_and_a_restart_mid_run_lose_no_job_and_charge_no_period_twice(
    infra, private_rabbit, tmp_path
):
    """200 daily subscriptions on one test clock, advanced 4 days: 800 renewals. The private
    node is killed (SIGKILL) as the scheduler's first burst of jobs is created, killed again
    with a quarter of the renewals done and jobs in the worker's hands, and stopped cleanly
    with half done; each time it comes back on the same data after a few seconds. Every
    mesh process stays up and reconnects; the clock ends `ready` with every job succeeded
    after one attempt, every period charged exactly once at the sandbox PSP (by amount:
    each subscription has its own), and no dead letter.

    Seen failing against a consumer that does not reconnect (jobs stall) and against
    classic queues with transient messages (the crash loses messages; their jobs stay
    queued). A publisher that does not await confirms is not reliably caught: the window
    between its write and the broker's commit is milliseconds."""
    with own_mesh(tmp_path / "mesh", private_rabbit) as (mesh, own, merchant):
        start = datetime(2031, 5, 1, 8, tzinfo=UTC)
        clock = new_clock(mesh, merchant, start)
        token = tokenize(mesh, merchant).body["id"]
        amounts = [FIRST_AMOUNT + i for i in range(SUBSCRIPTIONS)]
        base = {"payment_method": token, "currency": "usd", "interval": "day", "test_clock": clock}
        with ThreadPoolExecutor(4) as pool:  # a merchant's concurrent calls, not one at a time
            created = list(
                pool.map(
                    lambda amount: post(
                        mesh, merchant, "/v1/subscriptions", {**base, "amount": amount}
                    ),
                    amounts,
                )
            )
        for response in created:
            assert response.status == 200, response.body
            assert response.body["status"] == "active"
        renewals = SUBSCRIPTIONS * DAYS
        total = SUBSCRIPTIONS + renewals  # the first periods were charged at creation

        began = time.monotonic()
        advanced = post(
            mesh,
            merchant,
            f"/v1/test_clocks/{clock}/advance",
            {"frozen_time": iso(start + timedelta(days=DAYS))},
        )
        assert advanced.status == 200, advanced.body

        progress = Progress(mesh, own.database_url, clock)
        # Crash the node as the scheduler's burst of jobs goes out through the outbox.
        progress.wait(lambda counts: counts.get("queued", 0) > 0, interval=0.005)
        at_burst = job_counts(own.database_url, clock)
        private_rabbit.crash()
        time.sleep(1)
        private_rabbit.start()
        # Crash it again once a quarter of the renewals went through, with jobs in flight.
        progress.wait(lambda counts: counts.get("succeeded", 0) >= SUBSCRIPTIONS + renewals // 4)
        at_crash = job_counts(own.database_url, clock)
        private_rabbit.crash()
        time.sleep(3)  # workers finish what they hold; new jobs wait in the outbox
        private_rabbit.start()
        # And a clean stop once more than half went through.
        progress.wait(lambda counts: counts.get("succeeded", 0) >= SUBSCRIPTIONS + renewals // 2)
        at_stop = job_counts(own.database_url, clock)
        private_rabbit.stop()
        time.sleep(3)
        private_rabbit.start()
        progress.wait(lambda _counts: clock_status(mesh, merchant, clock) == "ready")
        took = time.monotonic() - began
        print(f"{renewals} renewals in {took:.1f} s; jobs at each interruption:")
        print(f"  {at_burst}\n  {at_crash}\n  {at_stop}")

        assert mesh.dead_process() is None, f"{mesh.dead_process()} exited"
        # Every interruption came mid-run: renewals were unsettled each time.
        assert at_burst.get("succeeded", 0) < total
        assert at_crash.get("succeeded", 0) < total
        assert at_stop.get("succeeded", 0) < total
        assert job_counts(own.database_url, clock) == {"succeeded": total}
        # One attempt per job, and it succeeded.
        attempts = sql(
            own,
            "SELECT a.attempt, a.outcome, count(*) FROM rebill.rebill_attempts a"
            " JOIN rebill.rebill_jobs j ON j.id = a.job_id WHERE j.test_clock = %s"
            " GROUP BY a.attempt, a.outcome",
            clock,
        )
        assert attempts == [(1, "succeeded", total)]
        # Every period charged exactly once at the PSP: each subscription has its amount.
        charged: dict[int, int] = {}
        for charge in sandbox(mesh, "/v1/charges")["data"]:
            charged[charge["amount"]] = charged.get(charge["amount"], 0) + 1
        assert charged == dict.fromkeys(amounts, 1 + DAYS)
        assert sql(own, "SELECT count(*) FROM rebill.dead_letters") == [(0,)]


# --- poison messages and dead letters, on the machine's broker (a vhost of our own) ---------

JOB_ROUTING_KEY = "rebill_job.monthly"
JOB_QUEUE = "rebill.monthly"


@pytest.fixture(scope="module")
def letters_mesh(infra, tmp_path_factory) -> Iterator[tuple[Mesh, Infra, TestMerchant]]:
    with own_mesh(tmp_path_factory.mktemp("letters-mesh")) as running:
        yield running


def admin(mesh: Mesh, method: str, request):
    """RebillAdminService as an operator calls it: an `ops` service token, straight to rebill."""
    token = TokenIssuer("ops", Path(os.environ["PAYMESH_KEYS_DIR"])).token_for("rebill")
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['rebill']}") as channel:
        stub = rebill_admin_pb2_grpc.RebillAdminServiceStub(channel)
        return getattr(stub, method)(request, metadata=((SERVICE_TOKEN_HEADER, token),), timeout=15)


def letters(mesh: Mesh, status: str = "dead") -> list:
    request = rebill_admin_pb2.ListDeadLettersRequest(status=status, limit=100)
    return list(admin(mesh, "ListDeadLetters", request).data)


def refused(mesh: Mesh, method: str, request) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        admin(mesh, method, request)
    return raised.value.code()


@contextlib.contextmanager
def broker_channel(infra: Infra) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(infra.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        yield channel
    finally:
        connection.close()


def publish_raw(infra: Infra, body: bytes) -> None:
    """Onto the events exchange under a job routing key, as the outbox would: confirmed, and
    routed to a queue (mandatory), or pika raises."""
    with broker_channel(infra) as channel:
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        channel.basic_publish(EVENTS_EXCHANGE, JOB_ROUTING_KEY, body, properties, mandatory=True)


def consuming(infra: Infra) -> None:
    """Until a worker consumes rebill.monthly, and its queue holds no message."""
    with broker_channel(infra) as channel:
        wait_until(
            lambda: (
                (declared := channel.queue_declare(JOB_QUEUE, passive=True).method).consumer_count
                and declared.message_count == 0
            ),
            timeout=60,
        )


def reclaimed(infra: Infra, job: str) -> bool:
    """Whether the sweep for lost messages re-published `job` (its audit row says so)."""
    return sql(
        infra,
        "SELECT count(*) FROM rebill.rebill_audit WHERE object_id = %s"
        " AND action = 'rebill.reclaimed'",
        job,
    ) != [(0,)]


@contextlib.contextmanager
def sweeping_lost_messages(mesh: Mesh) -> Iterator[None]:
    """rebill_svc (its scheduler) restarted to re-publish every job queued for a second
    (REBILL_REQUEUE_AFTER_SECONDS), then back as the module's mesh runs it."""

    def restart(env: dict[str, str]) -> None:
        mesh.stop("rebill")
        mesh.spawn("rebill", [sys.executable, "-m", SERVICES["rebill"].package], env=env)
        mesh.wait_until([f"http://127.0.0.1:{mesh.ports.http['rebill']}/readyz"], 60)

    restart({**mesh.env, "REBILL_REQUEUE_AFTER_SECONDS": "1"})
    try:
        yield
    finally:
        restart(mesh.env)


@contextlib.contextmanager
def worker_stopped(mesh: Mesh) -> Iterator[None]:
    """No rebill worker consumes meanwhile; it is back and consuming afterwards."""
    mesh.stop("rebill_worker")
    try:
        yield
    finally:
        mesh.spawn("rebill_worker", [sys.executable, "-m", "rebill_svc.worker"])
        mesh.wait_until([f"http://127.0.0.1:{mesh.ports.rebill_worker}/readyz"], 60)


def monthly_on_own_clock(mesh: Mesh, merchant, amount: int) -> tuple[str, str]:
    """A monthly subscription on a clock of its own (its first period charged); the clock."""
    clock = new_clock(mesh, merchant, START)
    created = subscribe(mesh, merchant, amount, test_clock=clock)
    assert created.status == 200, created.body
    assert len(charges_of(mesh, amount)) == 1
    return created.body["id"], clock


def advance_a_month(mesh: Mesh, merchant, clock: str) -> None:
    moved = post(
        mesh,
        merchant,
        f"/v1/test_clocks/{clock}/advance",
        {"frozen_time": iso(START + timedelta(days=31))},
    )
    assert moved.status == 200, moved.body


def renewal_job(infra: Infra, subscription: str) -> str:
    """The second period's job, once the scheduler created it."""
    return wait_until(
        lambda: sql(
            infra,
            "SELECT id FROM rebill.rebill_jobs WHERE subscription_id = %s"
            " ORDER BY period_start OFFSET 1",
            subscription,
        ),
        timeout=30,
    )[0][0]


def jobs_of(infra: Infra, subscription: str) -> list[tuple]:
    return sql(
        infra,
        "SELECT j.status, count(a.*) FROM rebill.rebill_jobs j"
        " LEFT JOIN rebill.rebill_attempts a ON a.job_id = j.id"
        " WHERE j.subscription_id = %s GROUP BY j.id ORDER BY j.period_start",
        subscription,
    )


START = datetime(2032, 1, 10, 12, tzinfo=UTC)


def ours(mesh: Mesh, status: str, keep) -> list:
    return [d for d in letters(mesh, status) if keep(d)]


def test_poison_messages_land_in_rebill_dead_and_the_renewal_behind_them_is_charged(
    letters_mesh,
):
    """An unreadable message and one naming no job are rejected by the worker (reason
    `rejected`, not `delivery_limit`: no redelivery first), reach the dead letters, and the
    renewal published behind them on rebill.monthly is charged."""
    mesh, own, merchant = letters_mesh
    unknown_job = "rj_" + secrets.token_hex(12)
    unknown = json.dumps(
        {
            "id": "evt_" + secrets.token_hex(8),
            "type": JOB_ROUTING_KEY,
            "created": iso(START),
            "data": {"object_type": "rebill_job", "object_id": unknown_job, "attempt": 1},
        }
    )
    malformed = "{not json " + secrets.token_hex(4)
    poison = (malformed, unknown)
    subscription, clock = monthly_on_own_clock(mesh, merchant, 7101)
    with worker_stopped(mesh):
        # The poison first, then the renewal's message behind it on the same queue.
        publish_raw(own, malformed.encode())
        publish_raw(own, unknown.encode())
        advance_a_month(mesh, merchant, clock)
        renewal_job(own, subscription)
        with broker_channel(own) as channel:
            wait_until(
                lambda: channel.queue_declare(JOB_QUEUE, passive=True).method.message_count == 3,
                timeout=30,
            )

    wait_until(lambda: clock_status(mesh, merchant, clock) == "ready", timeout=60, interval=0.2)
    assert len(charges_of(mesh, 7101)) == 2
    assert jobs_of(own, subscription) == [("succeeded", 1), ("succeeded", 1)]
    dead = wait_until(
        lambda: len(found := ours(mesh, "dead", lambda d: d.body in poison)) == 2 and found,
        timeout=30,
    )
    assert sorted((d.queue, d.reason, d.job_id, d.body, d.status) for d in dead) == sorted(
        [
            (JOB_QUEUE, "rejected", "", malformed, "dead"),
            (JOB_QUEUE, "rejected", unknown_job, unknown, "dead"),
        ]
    )
    # Neither names a job to run again: retrying is refused, discarding clears them.
    for letter in dead:
        request = rebill_admin_pb2.RetryDeadLetterRequest(id=letter.id)
        assert refused(mesh, "RetryDeadLetter", request) == grpc.StatusCode.FAILED_PRECONDITION
        discarded = admin(
            mesh, "DiscardDeadLetter", rebill_admin_pb2.DiscardDeadLetterRequest(id=letter.id)
        )
        assert discarded.status == "discarded"
    assert ours(mesh, "dead", lambda d: d.body in poison) == []


def test_a_message_delivered_too_often_without_an_ack_goes_to_rebill_dead(letters_mesh):
    """A message whose consumers keep dying before their ack (the channel closes with it
    unacked, as when a worker crashes on it) is redelivered up to the queue's delivery limit,
    then moved to rebill.dead with reason `delivery_limit`, and the queue is free of it."""
    mesh, own, _merchant = letters_mesh
    job = "rj_" + secrets.token_hex(12)
    body = json.dumps(
        {
            "id": "evt_" + secrets.token_hex(8),
            "type": JOB_ROUTING_KEY,
            "created": iso(START),
            "data": {"object_type": "rebill_job", "object_id": job, "attempt": 1},
        }
    ).encode()
    deliveries = 0
    with worker_stopped(mesh):
        publish_raw(own, body)
        for _ in range(DELIVERY_LIMIT + 3):
            with broker_channel(own) as channel:  # closed with the message unacked
                method, _properties, got = channel.basic_get(JOB_QUEUE)
                if method is None:
                    break
                assert got == body
                deliveries += 1
    assert deliveries == DELIVERY_LIMIT + 1  # the first delivery and the limit's redeliveries
    dead = wait_until(
        lambda: (found := ours(mesh, "dead", lambda d: d.job_id == job)) and found, timeout=30
    )
    assert [(d.queue, d.reason, d.body) for d in dead] == [
        (JOB_QUEUE, "delivery_limit", body.decode())
    ]
    admin(mesh, "DiscardDeadLetter", rebill_admin_pb2.DiscardDeadLetterRequest(id=dead[0].id))


def test_a_dead_job_message_is_charged_once_when_retried_and_a_discarded_one_never(
    letters_mesh,
):
    """Two renewals' messages die (taken off rebill.monthly and rejected, as a worker that
    could not handle them would, while no worker runs): nothing charges them until an
    operator retries one, which charges its period once; retrying it again, or retrying a
    discarded letter, is FAILED_PRECONDITION; the discarded renewal is never charged, not
    even by the sweep for lost messages (a third renewal's message, lost outright, proves
    that a sweep ran past the discarded one's window); and a stray copy of the retried job's
    message changes nothing."""
    mesh, own, merchant = letters_mesh
    retried_sub, retried_clock = monthly_on_own_clock(mesh, merchant, 7102)
    discarded_sub, discarded_clock = monthly_on_own_clock(mesh, merchant, 7103)
    lost_sub, lost_clock = monthly_on_own_clock(mesh, merchant, 7104)
    bodies = {}
    with worker_stopped(mesh):
        advance_a_month(mesh, merchant, retried_clock)
        advance_a_month(mesh, merchant, discarded_clock)
        advance_a_month(mesh, merchant, lost_clock)
        retried_job = renewal_job(own, retried_sub)
        discarded_job = renewal_job(own, discarded_sub)
        lost_job = renewal_job(own, lost_sub)
        with broker_channel(own) as channel:
            for _ in range(3):
                method, _properties, body = wait_until(
                    lambda: (got := channel.basic_get(JOB_QUEUE))[0] and got, timeout=30
                )
                job = json.loads(body)["data"]["object_id"]
                if job == lost_job:  # taken and acked: lost as with a broker's queue
                    channel.basic_ack(method.delivery_tag)
                    continue
                bodies[job] = body
                channel.basic_reject(method.delivery_tag, requeue=False)
    assert set(bodies) == {retried_job, discarded_job}
    dead = wait_until(
        lambda: len(found := ours(mesh, "dead", lambda d: d.job_id in bodies)) == 2 and found,
        timeout=30,
    )
    assert {(d.queue, d.reason, d.job_id) for d in dead} == {
        (JOB_QUEUE, "rejected", job) for job in bodies
    }
    by_job = {d.job_id: d.id for d in dead}
    retried, discarded = by_job[retried_job], by_job[discarded_job]

    # With the worker back and consuming an empty queue, neither renewal runs: its only
    # message is in the dead letters.
    consuming(own)
    assert clock_status(mesh, merchant, retried_clock) == "advancing"
    assert len(charges_of(mesh, 7102)) == 1

    answer = admin(mesh, "RetryDeadLetter", rebill_admin_pb2.RetryDeadLetterRequest(id=retried))
    assert (answer.status, answer.job_id) == ("retried", retried_job)
    wait_until(
        lambda: clock_status(mesh, merchant, retried_clock) == "ready", timeout=60, interval=0.2
    )
    assert jobs_of(own, retried_sub) == [("succeeded", 1), ("succeeded", 1)]
    again = rebill_admin_pb2.RetryDeadLetterRequest(id=retried)
    assert refused(mesh, "RetryDeadLetter", again) == grpc.StatusCode.FAILED_PRECONDITION
    # The old message turning up again (a redelivery) is taken and dropped: the job settled.
    publish_raw(own, bodies[retried_job])

    answer = admin(
        mesh, "DiscardDeadLetter", rebill_admin_pb2.DiscardDeadLetterRequest(id=discarded)
    )
    assert answer.status == "discarded"
    # The discard settles the renewal as not charged: no sweep for lost messages re-publishes
    # it (this mesh sweeps only after an hour, a real one after minutes), the clock is done,
    # and the audit trail says who dropped it.
    wait_until(
        lambda: clock_status(mesh, merchant, discarded_clock) == "ready", timeout=30, interval=0.2
    )
    assert sql(
        own,
        "SELECT actor, result, details->>'dead_letter' FROM rebill.rebill_audit"
        " WHERE object_id = %s AND action = 'dead_letter.discard'",
        discarded_job,
    ) == [("ops", "failed", discarded)]
    assert sql(
        own,
        "SELECT count(*) FROM rebill.outbox"
        " WHERE aggregate_id = %s AND event_type = 'rebill.failed'",
        discarded_job,
    ) == [(1,)]
    retry_discarded = rebill_admin_pb2.RetryDeadLetterRequest(id=discarded)
    assert refused(mesh, "RetryDeadLetter", retry_discarded) == grpc.StatusCode.FAILED_PRECONDITION
    assert retried in {d.id for d in letters(mesh, "retried")}
    assert discarded in {d.id for d in letters(mesh, "discarded")}

    # The sweep for lost messages, made to look back one second instead of an hour, runs:
    # its one statement re-publishes the lost renewal (charged now) and, had the discard left
    # it waiting, the discarded one with it.
    assert jobs_of(own, lost_sub) == [("succeeded", 1), ("queued", 0)]
    with sweeping_lost_messages(mesh):
        wait_until(lambda: reclaimed(own, lost_job), timeout=60)
        wait_until(
            lambda: clock_status(mesh, merchant, lost_clock) == "ready", timeout=60, interval=0.2
        )
    assert len(charges_of(mesh, 7104)) == 2
    assert len(charges_of(mesh, 7102)) == 2
    assert len(charges_of(mesh, 7103)) == 1
    assert not reclaimed(own, discarded_job)
    assert jobs_of(own, retried_sub) == [("succeeded", 1), ("succeeded", 1)]
    assert jobs_of(own, discarded_sub) == [("succeeded", 1), ("failed", 0)]
    # The stray copy of the retried job's message was taken (before the lost renewal's
    # re-published one, on the same queue) and dropped.
    assert ours(mesh, "dead", lambda d: d.job_id in bodies) == []
    with broker_channel(own) as channel:
        assert channel.queue_declare(JOB_QUEUE, passive=True).method.message_count == 0
