"""SIGTERM drains a service: health flips to NOT_SERVING at once, the in-flight call
finishes, then the process exits cleanly."""

from __future__ import annotations

import signal
import sys
import uuid

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2

from dev.devmesh import Mesh, Ports
from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support.health import health
from tests.support.mesh import base_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway(infra, tmp_path):
    ports = Ports.free()
    env = base_env(
        infra,
        **ports.service_env(),
        SHUTDOWN_DRAIN_DELAY_SECONDS="2",
        SHUTDOWN_GRACE_SECONDS="10",
    )
    mesh = Mesh(env=env, ports=ports, log_dir=tmp_path)
    mesh.spawn("gateway", [sys.executable, "-m", "gateway_svc"])
    try:
        mesh.wait_until([f"http://127.0.0.1:{ports.http['gateway']}/readyz"], timeout=30)
        yield mesh
    finally:
        mesh.stop()


def blocked_on_a_lock(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as db:
        waiting = db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()[0]
    return waiting > 0


def test_sigterm_flips_health_and_lets_the_in_flight_call_finish(gateway, infra, merchant):
    intent_id = f"pi_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(infra.database_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO gateway.payment_intents (id, merchant_id, livemode, amount, currency,"
            " status, capture_method) VALUES (%s, %s, false, 700, 'usd',"
            " 'requires_payment_method', 'automatic')",
            (intent_id, merchant.id),
        )
    port = gateway.ports.grpc["gateway"]
    process = gateway.processes["gateway"]

    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        psycopg.connect(infra.database_url) as locker,
    ):
        # Hold the table so the call stays in flight until we let go.
        locker.execute("LOCK TABLE gateway.payment_intents IN ACCESS EXCLUSIVE MODE")
        in_flight = gateway_pb2_grpc.GatewayServiceStub(channel).GetPaymentIntent.future(
            gateway_pb2.GetPaymentIntentRequest(id=intent_id),
            timeout=30,
            metadata=tuple(merchant.auth().items()),
        )
        wait_until(lambda: blocked_on_a_lock(infra.database_url))

        process.send_signal(signal.SIGTERM)
        wait_until(lambda: health(port) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=2)
        locker.rollback()

        assert in_flight.result().id == intent_id
    assert process.wait(timeout=15) == 0
    log = (gateway.log_dir / "gateway.log").read_text()
    assert '"event": "draining"' in log
    assert '"event": "stopped"' in log
