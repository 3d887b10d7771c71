"""The mesh on a PostgreSQL cluster of its own, with a streaming replica for list reads.

A database outage is a blip: the cluster is stopped for 20 s under steady traffic (payments,
tokenizations, PSP webhooks) and started again. Within 5 s of its return no call fails with a
5xx, health said NOT_SERVING only during the outage, and the sandbox PSP's ledger holds every
payment exactly once.

The replica serves the lists (DATABASE_READ_URL): with its replay paused, a new payment is
missing from the list but found by id and by its idempotency key, which read the primary."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
import pytest
from grpc_health.v1 import health_pb2

from dev.devmesh import Mesh, Ports
from paymesh_ops.services import ALL
from tests.support.fault_mesh import made_secrets
from tests.support.health import health
from tests.support.http import Response, call
from tests.support.mesh import TestMerchant, base_env, create_merchant, started_mesh
from tests.support.payments import pay, post
from tests.support.private_postgres import (
    Cluster,
    PrivateInfra,
    migrated_private_infra,
    private_cluster,
)
from tests.support.psp import charges_of, sandbox
from tests.support.psp_webhooks import signed
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# PAYMESH_OUTAGE_SECONDS: how long the database is away (measure 3 s or 60 s with it).
OUTAGE_SECONDS = float(os.environ.get("PAYMESH_OUTAGE_SECONDS", "20"))
GRACE_SECONDS = 5  # after the database is back, no 5xx later than this
WATCH_AFTER_SECONDS = 10  # traffic goes on this long after the return
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class PrivateMesh:
    mesh: Mesh
    cluster: Cluster
    replica: Cluster
    infra: PrivateInfra
    merchant: TestMerchant


@pytest.fixture(scope="module")
def private_mesh(tmp_path_factory) -> Iterator[PrivateMesh]:
    directory = tmp_path_factory.mktemp("database-outage")
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(1))
        made = pool.submit(made_secrets)  # the keys (if not made yet) while the cluster is
        cluster = stack.enter_context(private_cluster())
        infra = stack.enter_context(migrated_private_infra(cluster, "paymesh_outage"))
        secrets = made.result()
        shutil.copytree(secrets / "keys", directory / "keys")
        shutil.copy(secrets / "vault-keyring.json", directory / "vault-keyring.json")
        replica = cluster.replica()  # a copy of the migrated database, streaming from then on
        ports = Ports.free()
        env = base_env(
            infra,
            **ports.service_env(),
            DATABASE_READ_URL=replica.url(infra.name),
            PAYMESH_KEYS_DIR=str(directory / "keys"),
            VAULT_KEYRING_FILE=str(directory / "vault-keyring.json"),
        )
        merchant = create_merchant(infra, "outage")
        (directory / "logs").mkdir()
        with started_mesh(env, ports, directory / "logs") as mesh:
            yield PrivateMesh(mesh, cluster, replica, infra, merchant)


@dataclass
class Traffic:
    """What a merchant and a PSP did, with the time of each answer."""

    mesh: Mesh
    merchant: TestMerchant
    # (when the call was made, what, its status), monotonic time
    answers: list[tuple[float, str, int]] = field(default_factory=list)
    payments: list[tuple[str, str]] = field(default_factory=list)  # (idempotency key, card)
    captured: list[dict] = field(default_factory=list)  # the sandbox's charges, for webhooks
    health: list[tuple[float, dict[str, int | None]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _answer(self, what: str, request) -> Response | None:
        made = time.monotonic()
        try:
            answer = request()
        except OSError:  # no answer at all counts as a 5xx
            self.answers.append((made, what, 599))
            return None
        self.answers.append((made, what, answer.status))
        return answer

    def flowing(self) -> set[str]:
        """The kinds of call answered with a 200 so far."""
        return {what for _at, what, status in list(self.answers) if status == 200}

    def pay(self, key: str, token: str) -> Response | None:
        body = {"amount": 1000, "currency": "usd", "payment_method": token, "confirm": True}
        headers = {**self.merchant.auth(), "idempotency-key": key}
        return self._answer(
            "payment",
            lambda: call(self.mesh.url("/v1/payment_intents"), "POST", headers, body),
        )

    def settle(self, key: str, card: str) -> Response:
        """The payment's answer once it is a 200, asked again with its key as a client would."""
        answers: list[Response | None] = []

        def paid() -> bool:
            answers.append(self.pay(key, card))
            return answers[-1] is not None and answers[-1].status == 200

        try:
            wait_until(paid, timeout=60, interval=1)
        except TimeoutError:
            pytest.fail(f"payment {key} never settled: {answers[-1]}")
        assert answers[-1] is not None
        return answers[-1]

    def merchant_and_psp(self) -> None:
        while not self.stop.is_set():
            tokenized = self._answer("tokenize", lambda: tokenize(self.mesh, self.merchant))
            if tokenized is not None and tokenized.status == 200:
                key = f"outage-{uuid.uuid4().hex}"
                self.payments.append((key, tokenized.body["id"]))
                paid = self.pay(key, tokenized.body["id"])
                if paid is not None and paid.status == 200:
                    self.captured.extend(charges_of(self.mesh, paid.body["id"]))
            if self.captured:  # the PSP announces a capture again, as PSPs do
                charge = self.captured[-1]
                event = {
                    "id": f"evt_outage_{uuid.uuid4().hex}",
                    "object": "event",
                    "type": "charge.captured",
                    "created": int(time.time()),
                    "data": {"object": charge},
                }
                self._answer("psp_webhook", lambda e=event: signed(self.mesh, "sandbox", e))
            time.sleep(0.2)

    def watch(self) -> None:
        """Every service's health, every quarter second."""
        while not self.stop.is_set():
            ports = self.mesh.ports.grpc
            self.health.append((time.monotonic(), {n: health(ports[n]) for n in ALL}))
            time.sleep(0.25)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        threads = [
            threading.Thread(target=t, daemon=True) for t in (self.merchant_and_psp, self.watch)
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(30)


def listed(mesh: Mesh, merchant: TestMerchant) -> set[str]:
    page = call(mesh.url("/v1/payment_intents?limit=100"), headers=merchant.auth())
    assert page.status == 200, page.body
    return {intent["id"] for intent in page.body["data"]}


@contextlib.contextmanager
def replay_paused(replica: Cluster, database: str) -> Iterator[None]:
    """The replica stops applying the primary's changes (it still serves reads)."""
    with psycopg.connect(replica.url(database), autocommit=True) as db:
        db.execute("SELECT pg_wal_replay_pause()")
        wait_until(
            lambda: db.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused"
        )
        try:
            yield
        finally:
            db.execute("SELECT pg_wal_replay_resume()")


def test_the_replica_serves_the_list_and_the_primary_what_must_be_fresh(private_mesh):
    mesh, merchant = private_mesh.mesh, private_mesh.merchant
    first = pay(mesh, merchant).body["id"]
    wait_until(lambda: first in listed(mesh, merchant))  # the replica has caught up

    with replay_paused(private_mesh.replica, private_mesh.infra.name):
        card = tokenize(mesh, merchant).body["id"]
        body = {"amount": 700, "currency": "usd", "payment_method": card, "confirm": True}
        created = post(mesh, merchant, "/v1/payment_intents", body, key="replica-1")
        assert created.status == 200, created.body
        second = created.body["id"]

        fetched = call(mesh.url(f"/v1/payment_intents/{second}"), headers=merchant.auth())
        again = post(mesh, merchant, "/v1/payment_intents", body, key="replica-1")
        assert fetched.status == 200 and fetched.body["status"] == "succeeded"
        assert again.status == 200 and again.body["id"] == second
        shown = listed(mesh, merchant)
        assert first in shown and second not in shown  # the list comes from the replica

    wait_until(lambda: second in listed(mesh, merchant), timeout=10)


def unacknowledged(mesh: Mesh) -> set[str]:
    """The sandbox's events that no delivery attempt has had a 2xx for yet."""
    log = sandbox(mesh, "/_webhooks")["data"]
    done = {d["event"] for d in log if 200 <= d["status"] < 300}
    return {d["event"] for d in log} - done


def test_a_20_s_outage_is_a_blip(private_mesh):
    mesh, merchant = private_mesh.mesh, private_mesh.merchant
    traffic = Traffic(mesh, merchant)
    with traffic.running():
        # Steady traffic first: every kind of call answered once (a fixed 5 s did the same).
        wait_until(lambda: traffic.flowing() == {"tokenize", "payment", "psp_webhook"}, 30)
        went = time.monotonic()
        private_mesh.cluster.stop()
        time.sleep(OUTAGE_SECONDS)
        private_mesh.cluster.start()
        back, back_wall = time.monotonic(), time.time()
        time.sleep(WATCH_AFTER_SECONDS)

    late = [
        (round(at - back, 1), what, status)
        for at, what, status in traffic.answers
        if status >= 500 and at > back + GRACE_SECONDS
    ]
    # The sandbox's own webhooks (its captures), as it sent them. A capture that arrives before
    # the gateway has recorded the payment's authorization is deferred (a 503 that asks the PSP
    # to send it again, the protocol's "not yet", under any traffic): not a failure, as long
    # as every event is acknowledged in the end (below).
    late += [
        (round(d["sent_at"] - back_wall, 1), f"sandbox_webhook {d['reason']}", d["status"])
        for d in sandbox(mesh, "/_webhooks")["data"]
        if not 200 <= d["status"] < 500
        and d["reason"] != "psp_event_deferred"
        and d["sent_at"] > back_wall + GRACE_SECONDS
    ]
    kinds = {what for at, what, status in traffic.answers if at > back + GRACE_SECONDS}
    failed = [at - back for at, _, status in traffic.answers if status >= 500 and at > back]
    print(  # the figures of a run (pytest -s)
        f"answers {len(traffic.answers)}, 5xx after the return {len(failed)},"
        f" the last at +{max(failed, default=0):.1f} s"
    )
    assert not late, f"5xx more than {GRACE_SECONDS} s after the database was back: {late}"
    assert kinds == {"tokenize", "payment", "psp_webhook"}  # traffic went on

    not_serving = [
        (round(at - back, 1), name)
        for at, statuses in traffic.health
        for name, status in statuses.items()
        if status != SERVING
    ]
    outside = [(t, n) for t, n in not_serving if not went - back < t < GRACE_SECONDS]
    assert not outside, f"not serving outside the outage: {outside}"
    assert {n for _, n in not_serving} == set(ALL), "every service said NOT_SERVING"

    # Every payment, retried with its key as a client would, exists once at the PSP.
    intents = {}
    for key, card in traffic.payments:
        paid = traffic.settle(key, card)
        assert paid.body["status"] == "succeeded", paid.body
        intents[key] = paid.body["id"]
    assert len(set(intents.values())) == len(intents)
    charges = {i: charges_of(mesh, i) for i in intents.values()}
    doubled_or_lost = {i: len(c) for i, c in charges.items() if len(c) != 1}
    assert doubled_or_lost == {}
    # Every webhook the sandbox sent is acknowledged in the end (it sends each again, for up
    # to a minute, until it is).
    wait_until(lambda: not unacknowledged(mesh), timeout=45, interval=1)
    ledger = sandbox(mesh, "/v1/transactions")["data"]
    ours = {c[0]["id"] for c in charges.values()}
    paid_at_psp = [t for t in ledger if t["type"] == "charge" and t["charge"] in ours]
    assert sorted(t["charge"] for t in paid_at_psp) == sorted(ours)
    assert {t["amount"] for t in paid_at_psp} == {1000}
