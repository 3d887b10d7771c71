"""Health follows the dependencies: with PostgreSQL or RabbitMQ cut off (through a TCP proxy
we control), every service says NOT_SERVING, its /readyz and Envoy's /readyz say 503, and
within 10 s of the dependency's return everything is SERVING again."""

from __future__ import annotations

import time

import pytest
from grpc_health.v1 import health_pb2

from dev.devmesh import Mesh, Ports
from paymesh_ops.services import ALL
from tests.support.health import health
from tests.support.http import call
from tests.support.mesh import base_env, started_mesh
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def proxies():
    postgres = TcpProxy("127.0.0.1", 5432).start()
    rabbitmq = TcpProxy("127.0.0.1", 5672).start()
    yield {"postgresql": postgres, "rabbitmq": rabbitmq}
    postgres.stop()
    rabbitmq.stop()


@pytest.fixture(scope="module")
def proxied_mesh(infra, proxies, tmp_path_factory):
    ports = Ports.free()
    env = base_env(
        infra,
        **ports.service_env(),
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{proxies['postgresql'].port}/{infra.name}",
        AMQP_URL=f"amqp://guest:guest@127.0.0.1:{proxies['rabbitmq'].port}/{infra.name}",
    )
    with started_mesh(env, ports, tmp_path_factory.mktemp("proxied-mesh"), timeout=60) as mesh:
        yield mesh


def every_service(mesh: Mesh, status: int) -> bool:
    return all(
        health(mesh.ports.grpc[name]) == status
        and health(mesh.ports.grpc[name], ALL[name].grpc_services[0]) == status
        for name in ALL
    )


@pytest.mark.parametrize("dependency", ["postgresql", "rabbitmq"])
def test_health_follows_a_dependency_going_away_and_coming_back(
    proxied_mesh, proxies, dependency, merchant
):
    mesh = proxied_mesh
    wait_until(lambda: every_service(mesh, SERVING) and call(mesh.url("/readyz")).status == 200)

    proxies[dependency].stop()
    try:
        wait_until(lambda: every_service(mesh, NOT_SERVING), timeout=10)
        for name in ALL:
            ready = call(f"http://127.0.0.1:{mesh.ports.http[name]}/readyz")
            assert ready.status == 503
            assert dependency in ready.body["failures"]
        assert call(mesh.url("/healthz")).status == 200  # Envoy itself is alive
        wait_until(lambda: call(mesh.url("/readyz")).status == 503, timeout=10)
        # Envoy's /readyz turns 503 once any cluster has no healthy host; the gateway's own
        # hosts may be found unhealthy a health-check round later.
        wait_until(
            lambda: (
                call(mesh.url("/v1/payment_intents/pi_any"), headers=merchant.auth()).status == 503
            ),
            timeout=10,
        )
        unavailable = call(mesh.url("/v1/payment_intents/pi_any"), headers=merchant.auth())
        assert unavailable.status == 503
        assert unavailable.headers["content-type"].startswith("application/json")
    finally:
        proxies[dependency].start()
    returned = time.monotonic()

    wait_until(lambda: every_service(mesh, SERVING), timeout=10)
    assert time.monotonic() - returned < 10
    wait_until(lambda: call(mesh.url("/readyz")).status == 200, timeout=10)
    # Calls work again at once: reaching PostgreSQL for the key and the intent.
    for _ in range(5):
        assert call(mesh.url("/v1/payment_intents/pi_any"), headers=merchant.auth()).status == 404
