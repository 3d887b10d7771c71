"""rebill on a RabbitMQ cluster of three nodes (private ones, clustered on this machine; see
tests/support/rabbit_cluster.py): the loss of one node in the middle of 1,000 renewals loses
no job and charges no period twice.

The mesh is given every node's address in AMQP_URL's list form. Every process but one lists
node 0 first, so all of them (the publishers of the outboxes, the scheduler, one worker)
hold their connections there, and the job queues, declared through node 0, have their
leaders there too; a second worker lists node 1 first. Node 0 is then killed (SIGKILL: no
goodbye, no leadership handed over) with a quarter of the renewals done: every connection
but the second worker's drops, and every job queue elects a leader among the two nodes left.

REBILL_REQUEUE_AFTER_SECONDS is far beyond the test: the scheduler's safety net (publishing
again a job queued too long) never fires, so a job whose message the cluster lost stays
unsettled, and the test fails instead of being rescued. The sandbox PSP's ledger judges what
was charged: each subscription bills an amount of its own."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from dev.devmesh import Mesh, Ports, free_ports
from rebill_svc.topology import JOB_QUEUES
from tests.support.fault_mesh import made_secrets
from tests.support.mesh import TestMerchant, base_env, create_merchant, migrated_database
from tests.support.mesh import started_mesh as whole_mesh
from tests.support.payments import post
from tests.support.psp import sandbox
from tests.support.rabbit_cluster import RabbitCluster, rabbitmq_bin
from tests.support.rebill import Progress, get, iso, job_counts, new_clock
from tests.support.vault import tokenize

pytestmark = pytest.mark.integration

SUBSCRIPTIONS = 250
DAYS = 4  # daily subscriptions out of a one-day trial: 4 renewals each
RENEWALS = SUBSCRIPTIONS * DAYS
FIRST_AMOUNT = 940_000  # subscription i bills FIRST_AMOUNT + i


@pytest.fixture
def cluster(tmp_path) -> Iterator[RabbitCluster]:
    """Three nodes, not started yet (cluster_mesh boots them while it makes the database),
    all killed afterwards."""
    bin_dir = rabbitmq_bin()
    if bin_dir is None:
        pytest.skip("no rabbitmq-server on this machine to run private nodes")
    nodes = RabbitCluster(tmp_path / "rabbit", bin_dir)
    try:
        yield nodes
    finally:
        nodes.stop()


@contextlib.contextmanager
def cluster_mesh(
    cluster: RabbitCluster, tmp_path: Path
) -> Iterator[tuple[Mesh, str, TestMerchant]]:
    """The cluster formed; a whole mesh over a database of its own and the cluster (node 0
    listed first), and a second rebill worker listing node 1 first."""
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(1) as pool:
            clustered = pool.submit(cluster.start)
            ports = Ports.free()
            (tmp_path / "mesh").mkdir()
            secrets = made_secrets()
            shutil.copytree(secrets / "keys", tmp_path / "keys")
            shutil.copy(secrets / "vault-keyring.json", tmp_path / "vault-keyring.json")
            own = stack.enter_context(migrated_database("paymesh_rabbit_cluster"))
            merchant = create_merchant(own, "cluster")
            clustered.result()
        print(f"cluster formed in {time.monotonic() - began:.1f} s")
        env = base_env(
            own,
            **ports.service_env(),
            AMQP_URL=cluster.amqp_urls(first=0),
            PAYMESH_KEYS_DIR=str(tmp_path / "keys"),
            VAULT_KEYRING_FILE=str(tmp_path / "vault-keyring.json"),
            DB_POOL_SIZE="4",
            REBILL_WORKER_PREFETCH="8",
            REBILL_REQUEUE_AFTER_SECONDS="3600",
            REBILL_SCHEDULER_IDLE_SECONDS="0.2",
        )
        with whole_mesh(env, ports, tmp_path / "mesh") as mesh:
            [worker_port] = free_ports(1)
            mesh.spawn(
                "rebill_worker_2",
                [sys.executable, "-m", "rebill_svc.worker"],
                env={
                    **env,
                    "AMQP_URL": cluster.amqp_urls(first=1),
                    "REBILL_WORKER_HTTP_PORT": str(worker_port),
                },
            )
            mesh.wait_until([f"http://127.0.0.1:{worker_port}/readyz"], 60)
            print(f"mesh ready {time.monotonic() - began:.1f} s in")
            yield mesh, own.database_url, merchant


def subscribe_all(mesh: Mesh, merchant: TestMerchant, clock: str, trial_end: datetime) -> None:
    """SUBSCRIPTIONS daily subscriptions trialing on the clock (nothing charged yet)."""
    token = tokenize(mesh, merchant).body["id"]
    base = {
        "payment_method": token,
        "currency": "usd",
        "interval": "day",
        "test_clock": clock,
        "trial_end": iso(trial_end),
    }
    with ThreadPoolExecutor(4) as pool:
        created = list(
            pool.map(
                lambda i: post(
                    mesh, merchant, "/v1/subscriptions", {**base, "amount": FIRST_AMOUNT + i}
                ),
                range(SUBSCRIPTIONS),
            )
        )
    assert [c.status for c in created] == [200] * SUBSCRIPTIONS, created[0].body
    assert {c.body["status"] for c in created} == {"trialing"}


@pytest.mark.timeout(900)
def test_a_node_lost_mid_run_loses_no_job_and_charges_no_period_twice(cluster, tmp_path):
    """250 daily subscriptions out of a one-day trial on one test clock, advanced 4 days:
    1,000 renewals. With a quarter of them settled, node 0 is killed and stays down. The
    job queues are quorum queues with a member on each node and elect new leaders on the
    other two; the processes connected to node 0 connect to the next address of their list.
    Every mesh process stays up, the clock ends `ready` with every job succeeded after one
    attempt, every period is charged exactly once at the sandbox PSP, and nothing is
    dead-lettered."""
    with cluster_mesh(cluster, tmp_path) as (mesh, database_url, merchant):
        queues = cluster.quorum_queues()
        for queue in JOB_QUEUES:
            leader, online = queues[queue]
            assert leader == cluster.nodes[0].node, (queue, leader)
            assert sorted(online) == sorted(node.node for node in cluster.nodes), (queue, online)

        start = datetime(2035, 3, 1, 8, tzinfo=UTC)
        clock = new_clock(mesh, merchant, start)
        subscribing = time.monotonic()
        subscribe_all(mesh, merchant, clock, start + timedelta(days=1))
        began = time.monotonic()
        print(f"{SUBSCRIPTIONS} subscriptions in {began - subscribing:.1f} s")
        advanced = post(
            mesh,
            merchant,
            f"/v1/test_clocks/{clock}/advance",
            {"frozen_time": iso(start + timedelta(days=DAYS, hours=1))},
        )
        assert advanced.status == 200, advanced.body

        progress = Progress(mesh, database_url, clock)
        at_loss = progress.wait(lambda counts: counts.get("succeeded", 0) >= RENEWALS // 4)
        lost_at = time.monotonic()
        cluster.nodes[0].crash()
        settled = at_loss["succeeded"]
        progress.wait(lambda counts: counts.get("succeeded", 0) >= settled + 50)
        resumed = time.monotonic() - lost_at
        progress.wait(
            lambda counts: (
                counts == {"succeeded": RENEWALS}
                and get(mesh, merchant, f"/v1/test_clocks/{clock}").body["status"] == "ready"
            )
        )
        took = time.monotonic() - began
        print(
            f"{RENEWALS} renewals in {took:.1f} s ({time.monotonic() - lost_at:.1f} s after"
            f" the loss; 50 more settled {resumed:.1f} s after it); jobs when node 0 was"
            f" killed: {at_loss}"
        )

        assert mesh.dead_process() is None, f"{mesh.dead_process()} exited"
        # Every process is ready again: its publisher and consumers found a node up.
        mesh.wait_until([f"http://127.0.0.1:{p}/readyz" for p in mesh.ports.ops_ports()], 10)
        assert at_loss.get("succeeded", 0) < RENEWALS  # the loss came mid-run
        queues = cluster.quorum_queues()
        for queue in JOB_QUEUES:  # the queues live on, led by a node still up
            leader, online = queues[queue]
            assert leader in {cluster.nodes[1].node, cluster.nodes[2].node}, (queue, leader)
            assert len(online) == 2, (queue, online)
        with psycopg.connect(database_url, autocommit=True) as db:
            attempts = db.execute(
                "SELECT a.attempt, a.outcome, count(*) FROM rebill.rebill_attempts a"
                " JOIN rebill.rebill_jobs j ON j.id = a.job_id WHERE j.test_clock = %s"
                " GROUP BY a.attempt, a.outcome",
                (clock,),
            ).fetchall()
            dead_letters = db.execute("SELECT count(*) FROM rebill.dead_letters").fetchone()
        assert attempts == [(1, "succeeded", RENEWALS)]
        assert dead_letters == (0,)
        assert job_counts(database_url, clock) == {"succeeded": RENEWALS}
        # Every period charged exactly once at the PSP: each subscription has its amount.
        charged = Counter(c["amount"] for c in sandbox(mesh, "/v1/charges")["data"])
        amounts = [FIRST_AMOUNT + i for i in range(SUBSCRIPTIONS)]
        assert charged == Counter(dict.fromkeys(amounts, DAYS))
