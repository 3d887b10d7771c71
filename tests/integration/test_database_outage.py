"""A database outage is a blip: the mesh's own PostgreSQL cluster is stopped for 20 s under
steady traffic (payments, tokenizations, PSP webhooks) and started again. Within 5 s of its
return no call fails with a 5xx, health said NOT_SERVING only during the outage, and the
sandbox PSP's ledger holds every payment exactly once."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from grpc_health.v1 import health_pb2

from dev.devmesh import Mesh, Ports
from paymesh_ops.services import ALL
from tests.support.fault_mesh import made_secrets
from tests.support.health import health
from tests.support.http import Response, call
from tests.support.mesh import TestMerchant, base_env, create_merchant, started_mesh
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

OUTAGE_SECONDS = 20
GRACE_SECONDS = 5  # after the database is back, no 5xx later than this
WATCH_AFTER_SECONDS = 15  # traffic goes on this long after the return
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class PrivateMesh:
    mesh: Mesh
    cluster: Cluster
    infra: PrivateInfra
    merchant: TestMerchant


@pytest.fixture(scope="module")
def private_mesh(tmp_path_factory) -> Iterator[PrivateMesh]:
    directory = tmp_path_factory.mktemp("database-outage")
    secrets = made_secrets()
    shutil.copytree(secrets / "keys", directory / "keys")
    shutil.copy(secrets / "vault-keyring.json", directory / "vault-keyring.json")
    with (
        private_cluster() as cluster,
        migrated_private_infra(cluster, "paymesh_outage") as infra,
    ):
        ports = Ports.free()
        env = base_env(
            infra,
            **ports.service_env(),
            PAYMESH_KEYS_DIR=str(directory / "keys"),
            VAULT_KEYRING_FILE=str(directory / "vault-keyring.json"),
        )
        merchant = create_merchant(infra, "outage")
        (directory / "logs").mkdir()
        with started_mesh(env, ports, directory / "logs") as mesh:
            yield PrivateMesh(mesh, cluster, infra, merchant)


@dataclass
class Traffic:
    """What a merchant and a PSP did, with the time of each answer."""

    mesh: Mesh
    merchant: TestMerchant
    answers: list[tuple[float, str, int]] = field(default_factory=list)  # (when, what, status)
    payments: list[tuple[str, str]] = field(default_factory=list)  # (idempotency key, card)
    captured: list[dict] = field(default_factory=list)  # the sandbox's charges, for webhooks
    deliveries: list[tuple[float, int]] = field(default_factory=list)  # the sandbox's own
    health: list[tuple[float, dict[str, int | None]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _answer(self, what: str, request) -> Response | None:
        try:
            answer = request()
        except OSError:  # no answer at all counts as a 5xx
            self.answers.append((time.monotonic(), what, 599))
            return None
        self.answers.append((time.monotonic(), what, answer.status))
        return answer

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
        """Health of every service, and the sandbox's own webhook deliveries (their
        statuses, timed when first seen), every quarter second."""
        seen = 0
        while not self.stop.is_set():
            ports = self.mesh.ports.grpc
            self.health.append((time.monotonic(), {n: health(ports[n]) for n in ALL}))
            log = sandbox(self.mesh, "/_webhooks")["data"]
            now = time.monotonic()
            self.deliveries.extend((now, d["status"]) for d in log[seen:])
            seen = len(log)
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


def test_a_20_s_outage_is_a_blip(private_mesh):
    mesh, merchant = private_mesh.mesh, private_mesh.merchant
    traffic = Traffic(mesh, merchant)
    with traffic.running():
        time.sleep(5)
        went = time.monotonic()
        private_mesh.cluster.stop()
        time.sleep(OUTAGE_SECONDS)
        private_mesh.cluster.start()
        back = time.monotonic()
        time.sleep(WATCH_AFTER_SECONDS)

    late = [
        (round(at - back, 1), what, status)
        for at, what, status in traffic.answers
        if status >= 500 and at > back + GRACE_SECONDS
    ]
    late += [
        (round(at - back, 1), "sandbox_delivery", status)
        for at, status in traffic.deliveries
        if (status >= 500 or status == 0) and at > back + GRACE_SECONDS
    ]
    kinds = {what for at, what, status in traffic.answers if at > back + GRACE_SECONDS}
    failed = [at - back for at, _, status in traffic.answers if status >= 500 and at > back]
    print(  # the figures of a run (pytest -s)
        f"answers {len(traffic.answers)}, 5xx after the return {len(failed)},"
        f" the last at +{max(failed, default=0):.1f} s"
    )
    assert late == [], f"5xx more than {GRACE_SECONDS} s after the database was back"
    assert kinds == {"tokenize", "payment", "psp_webhook"}  # traffic went on

    not_serving = [
        (round(at - back, 1), name)
        for at, statuses in traffic.health
        for name, status in statuses.items()
        if status != SERVING
    ]
    outside = [(t, n) for t, n in not_serving if not went - back < t < GRACE_SECONDS]
    assert outside == [], "not serving outside the outage"
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
    ledger = sandbox(mesh, "/v1/transactions")["data"]
    ours = {c[0]["id"] for c in charges.values()}
    paid_at_psp = [t for t in ledger if t["type"] == "charge" and t["charge"] in ours]
    assert sorted(t["charge"] for t in paid_at_psp) == sorted(ours)
    assert {t["amount"] for t in paid_at_psp} == {1000}
