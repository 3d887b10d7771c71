"""With OTEL_EXPORTER_OTLP_ENDPOINT set, a service exports its RPC spans over OTLP/gRPC;
here the collector is a real OTLP gRPC server the test runs."""

from __future__ import annotations

import sys
import threading
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from paymesh.devmesh import Mesh, Ports
from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from tests.conftest import base_env
from tests.integration.test_vault import NEXT_YEAR
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans: list[tuple[str, str, bytes]] = []  # (service.name, span name, trace id)
        self._lock = threading.Lock()

    def Export(self, request, context):
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            (attributes.get("service.name"), span.name, span.trace_id)
                        )
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


def test_rpc_spans_are_exported_over_otlp_with_the_service_name(infra, collector, tmp_path):
    spans, collector_port = collector
    ports = Ports.free()
    env = base_env(
        infra,
        **ports.service_env(),
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector_port}",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    mesh = Mesh(env=env, ports=ports, log_dir=tmp_path)
    mesh.spawn("gateway", [sys.executable, "-m", "gateway_svc"])
    try:
        mesh.wait_until([f"http://127.0.0.1:{ports.http['gateway']}/readyz"], timeout=30)
        with grpc.insecure_channel(f"127.0.0.1:{ports.grpc['gateway']}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            with pytest.raises(grpc.RpcError):
                stub.GetPaymentIntent(gateway_pb2.GetPaymentIntentRequest(id="pi_x"), timeout=5)

        exported = wait_until(
            lambda: [s for s in spans.spans if s[1].endswith("GetPaymentIntent")], timeout=10
        )
    finally:
        mesh.stop()

    service_name, span_name, trace_id = exported[0]
    assert service_name == "gateway"
    assert span_name == "/paymesh.gateway.v1.GatewayService/GetPaymentIntent"
    log = (tmp_path / "gateway.log").read_text()
    assert trace_id.hex() in log  # the same trace id in the logs as in the trace


def test_one_payment_is_one_trace_across_gateway_and_vault(infra, merchant, collector, tmp_path):
    spans, collector_port = collector
    ports = Ports.free()
    env = base_env(
        infra,
        **ports.service_env(),
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector_port}",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    mesh = Mesh(env=env, ports=ports, log_dir=tmp_path)
    mesh.spawn(
        "sandbox_psp",
        [sys.executable, "-m", "paymesh.sandbox_psp", "--port", str(ports.sandbox_psp)],
    )
    for name, package in (("vault", "vault_proxy_svc"), ("gateway", "gateway_svc")):
        mesh.spawn(name, [sys.executable, "-m", package])
    metadata = tuple(merchant.auth().items())
    try:
        mesh.wait_until(
            [f"http://127.0.0.1:{ports.http[n]}/readyz" for n in ("vault", "gateway")], 30
        )
        with grpc.insecure_channel(f"127.0.0.1:{ports.grpc['vault']}") as channel:
            token = (
                vault_pb2_grpc.VaultServiceStub(channel)
                .CreatePaymentMethod(
                    vault_pb2.CreatePaymentMethodRequest(
                        card=vault_pb2.CardInput(
                            number="4242424242424242", exp_month=12, exp_year=NEXT_YEAR, cvc="123"
                        )
                    ),
                    metadata=metadata,
                    timeout=10,
                )
                .id
            )
        with grpc.insecure_channel(f"127.0.0.1:{ports.grpc['gateway']}") as channel:
            intent = gateway_pb2_grpc.GatewayServiceStub(channel).CreatePaymentIntent(
                gateway_pb2.CreatePaymentIntentRequest(
                    amount=900, currency="usd", payment_method=token, confirm=True
                ),
                metadata=metadata,
                timeout=15,
            )
        assert intent.status == "succeeded"

        def payment_trace():
            created = [s for s in spans.spans if s[1].endswith("CreatePaymentIntent")]
            if not created:
                return None
            trace_id = created[-1][2]
            services = {s[0] for s in spans.spans if s[2] == trace_id}
            return services if {"gateway", "vault"} <= services else None

        assert wait_until(payment_trace, timeout=10) >= {"gateway", "vault"}
    finally:
        mesh.stop()
