"""Ops and SRE views of a running mesh: grpcurl, health, reflection, /metrics, /readyz."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paymesh.platform.errors import ERROR_DOMAIN
from paymesh_ops.services import ALL
from tests.support.http import call

pytestmark = pytest.mark.integration

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", list(ALL))
def test_grpcurl_lists_the_service_health_and_reflection_on_every_port(mesh, name):
    listed = grpcurl(f"127.0.0.1:{mesh.ports.grpc[name]}", "list").split()

    assert set(ALL[name].grpc_services) <= set(listed)
    assert "grpc.health.v1.Health" in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed


@pytest.mark.parametrize("name", list(ALL))
def test_grpcurl_health_check_says_serving_overall_and_per_service(mesh, name):
    address = f"127.0.0.1:{mesh.ports.grpc[name]}"
    check = "grpc.health.v1.Health/Check"

    assert json.loads(grpcurl(address, check)) == {"status": "SERVING"}
    for service_name in ALL[name].grpc_services:
        reply = grpcurl("-d", json.dumps({"service": service_name}), address, check)
        assert json.loads(reply) == {"status": "SERVING"}


def test_grpcurl_describes_the_service_and_its_messages(mesh):
    address = f"127.0.0.1:{mesh.ports.grpc['gateway']}"
    service = grpcurl(address, "describe", "paymesh.gateway.v1.GatewayService")
    message = grpcurl(address, "describe", "paymesh.gateway.v1.PaymentIntent")

    assert "rpc GetPaymentIntent" in service
    assert '"/v1/payment_intents/{id}"' in service
    assert "int64 amount_capturable" in message


def test_a_generated_stub_gets_google_rpc_details_on_invalid_input(mesh, merchant):
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetPaymentIntent(
                gateway_pb2.GetPaymentIntentRequest(id=""),
                timeout=5,
                metadata=tuple(merchant.auth().items()),
            )

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and info.domain == ERROR_DOMAIN
    assert status.details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "id"


def test_a_stub_health_check_per_service_name_is_serving(mesh):
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['vault']}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="paymesh.vault.v1.VaultService"), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("name", list(ALL))
def test_every_metrics_endpoint_parses_as_prometheus_text(mesh, name):
    # One RPC first, so the request metrics have samples.
    grpcurl(f"127.0.0.1:{mesh.ports.grpc[name]}", "grpc.health.v1.Health/Check")
    response = call(f"http://127.0.0.1:{mesh.ports.http[name]}/metrics")

    assert response.status == 200
    families = {f.name: f for f in text_string_to_metric_families(response.body)}
    assert "gateway_requests" in families  # the parser drops the _total suffix
    assert "gateway_request_duration_seconds" in families
    samples = [s for s in families["gateway_requests"].samples if s.name.endswith("_total")]
    assert any(s.labels == {"service": name, "method": "Check", "code": "OK"} for s in samples)


def test_request_metrics_count_errors_by_code(mesh, merchant):
    call(mesh.url("/v1/payment_intents/pi_missing_for_metrics"), headers=merchant.auth())
    text = call(f"http://127.0.0.1:{mesh.ports.http['gateway']}/metrics").body

    assert (
        'gateway_requests_total{code="NOT_FOUND",method="GetPaymentIntent",service="gateway"}'
        in text
    )


@pytest.mark.parametrize("name", list(ALL))
def test_service_healthz_and_readyz_answer_200(mesh, name):
    port = mesh.ports.http[name]
    assert call(f"http://127.0.0.1:{port}/healthz").status == 200
    ready = call(f"http://127.0.0.1:{port}/readyz")
    assert ready.status == 200
    assert ready.body == {"status": "ready"}
