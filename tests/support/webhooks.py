"""Merchant webhooks as the tests watch them: a mesh of its own whose webhook_svc admits
loopback and retries on a compressed schedule, a receiver, and deliveries verified as a
merchant's Standard Webhooks library verifies them."""

from __future__ import annotations

from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook

from tests.support.fault_mesh import FaultMesh
from tests.support.http import call
from tests.support.mesh import TestMerchant, create_merchant
from tests.support.payments import post
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

SCHEDULE = (0, 0.4, 0.8, 1.6)  # compressed: four attempts within about 3 s
WEBHOOK_ENV = {
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "WEBHOOK_RETRY_SCHEDULE": ",".join(str(s) for s in SCHEDULE),
    "WEBHOOK_DELIVERY_TIMEOUT_SECONDS": "1",
    # Each endpoint's circuit opens after as many failures in a row as the schedule has
    # attempts, and tries again after longer than the schedule's gaps.
    "WEBHOOK_BREAKER_FAIL_MAX": str(len(SCHEDULE)),
    "WEBHOOK_BREAKER_RESET_SECONDS": "3",
}


@dataclass
class Hooks:
    faults: FaultMesh
    receiver: Receiver

    @property
    def mesh(self):
        return self.faults.mesh

    def merchant(self, name: str) -> TestMerchant:
        return create_merchant(self.faults.infra, name)

    def endpoint(self, merchant: TestMerchant, path: str, events=("*",), **fields) -> dict:
        body = {"url": self.receiver.url(path), "enabled_events": list(events), **fields}
        created = post(self.mesh, merchant, "/v1/webhook_endpoints", body)
        assert created.status == 200, created.body
        return created.body

    def get(self, merchant: TestMerchant, path: str):
        return call(self.mesh.url(path), "GET", merchant.auth())

    def deliveries(self, path: str, count: int, timeout: float = 20) -> list:
        return wait_until(
            lambda: len(self.receiver.at(path)) >= count and self.receiver.at(path), timeout=timeout
        )

    def metric(self, name: str) -> float:
        text = call(f"http://127.0.0.1:{self.mesh.ports.http['webhook']}/metrics").body
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def verified(secret: str, request) -> dict:
    """The delivery's body, verified as a merchant's Standard Webhooks library does."""
    return Webhook(secret).verify(request.body, request.headers)
