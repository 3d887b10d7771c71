"""With PAYMESH_TLS_DIR set, every gRPC hop is mutual TLS: Envoy → service and service →
service work with paymesh's certificates; a plaintext client, a client without a certificate
and a client whose certificate another CA signed are refused. Services bind loopback unless
told otherwise, and refuse plaintext beyond it unless allowed."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dev.devmesh import Mesh, Ports
from tests.support.mesh import base_env, paymesh
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SERVICES = (("gateway", "gateway_svc"), ("vault", "vault_proxy_svc"))


@pytest.fixture(scope="module")
def tls_mesh(infra, tmp_path_factory):
    """The gateway and the vault (it asks the gateway about API keys) and Envoy, over mTLS."""
    certs = tmp_path_factory.mktemp("certs")
    paymesh("certs", "init", "--dir", str(certs), env=base_env(infra))
    ports = Ports.free()
    env = base_env(
        infra, **ports.service_env(), PAYMESH_TLS_DIR=str(certs), SHUTDOWN_GRACE_SECONDS="1"
    )
    mesh = Mesh(env=env, ports=ports, log_dir=tmp_path_factory.mktemp("tls-mesh-logs"))
    try:
        for name, package in SERVICES:
            mesh.spawn(name, [sys.executable, "-m", package])
        mesh.wait_until([f"http://127.0.0.1:{ports.http[name]}/readyz" for name, _ in SERVICES])
        mesh.start_envoy()
        mesh.wait_until([mesh.url("/healthz")])  # Envoy itself; its clusters may still warm up
        yield mesh, certs
    finally:
        mesh.stop()


def health(target: str, credentials: grpc.ChannelCredentials | None) -> int:
    """The vault's health status over a channel with these credentials (None: plaintext)."""
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


def client_credentials(ca_dir: Path, identity_dir: Path) -> grpc.ChannelCredentials:
    """Trusts the CA of `ca_dir`; presents the ops certificate of `identity_dir`."""
    return grpc.ssl_channel_credentials(
        (ca_dir / "ca.crt").read_bytes(),
        (identity_dir / "ops.key").read_bytes(),
        (identity_dir / "ops.crt").read_bytes(),
    )


def test_a_client_with_a_paymesh_certificate_is_served(tls_mesh):
    mesh, certs = tls_mesh
    target = f"127.0.0.1:{mesh.ports.grpc['vault']}"

    assert (
        health(target, client_credentials(certs, certs)) == health_pb2.HealthCheckResponse.SERVING
    )


def test_rest_through_envoy_reaches_the_vault_and_the_vault_the_gateway_over_mtls(
    tls_mesh, merchant
):
    mesh, _ = tls_mesh
    # Envoy health-checks the vault over mTLS before it routes; the vault checks the API key
    # with the gateway over mTLS.
    wait_until(lambda: tokenize(mesh, merchant).status == 200, timeout=20, interval=0.5)


def test_a_plaintext_client_is_refused(tls_mesh):
    mesh, _ = tls_mesh
    target = f"127.0.0.1:{mesh.ports.grpc['vault']}"

    with pytest.raises(grpc.RpcError) as refused:
        health(target, None)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_without_a_certificate_is_refused(tls_mesh):
    mesh, certs = tls_mesh
    target = f"127.0.0.1:{mesh.ports.grpc['vault']}"
    server_auth_only = grpc.ssl_channel_credentials((certs / "ca.crt").read_bytes())

    with pytest.raises(grpc.RpcError) as refused:
        health(target, server_auth_only)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_certificate_of_another_ca_is_refused(tls_mesh, infra, tmp_path):
    mesh, certs = tls_mesh
    target = f"127.0.0.1:{mesh.ports.grpc['vault']}"
    rogue = tmp_path / "rogue"
    paymesh("certs", "init", "--dir", str(rogue), env=base_env(infra))

    with pytest.raises(grpc.RpcError) as refused:
        health(target, client_credentials(certs, rogue))

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def answers(host: str, port: int) -> bool:
    with socket.socket() as client:
        client.settimeout(2)
        return client.connect_ex((host, port)) == 0


def test_the_services_listen_on_loopback_only_by_default(mesh):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    for name in ("gateway", "vault"):
        for port in (mesh.ports.grpc[name], mesh.ports.http[name]):
            assert answers("127.0.0.1", port), f"{name} does not listen on 127.0.0.1:{port}"
            assert not answers(address, port), f"{name} answers on {address}:{port}"


def test_a_service_refuses_plaintext_beyond_loopback_unless_allowed(infra):
    env = base_env(infra, **Ports.free().service_env(), BIND_HOST="0.0.0.0")
    env.pop("PAYMESH_TLS_DIR", None)
    env.pop("PAYMESH_ALLOW_PLAINTEXT", None)

    done = subprocess.run(
        [sys.executable, "-m", "rebill_svc"], env=env, capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 2
    assert "PAYMESH_ALLOW_PLAINTEXT" in done.stdout + done.stderr
