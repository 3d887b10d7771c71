"""One trace per payment across the whole mesh, as an SRE reads it in Jaeger: a whole mesh
(Envoy included) exports over OTLP/gRPC to a real collector this test runs, and the test
asserts the shape of a payment's trace, a renewal's, a PSP retry's and a PSP webhook's link."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support.fault_mesh import FaultMesh, fault_mesh
from tests.support.http import Response, call
from tests.support.payments import post
from tests.support.psp import NO_FAULTS, close_sandbox_breaker, sandbox
from tests.support.psp_webhooks import dashboard, intent_row
from tests.support.rebill import advance, new_clock, rebills
from tests.support.receiver import Receiver, running_receiver
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SERVER, CLIENT, PRODUCER, CONSUMER = (
    trace_pb2.Span.SPAN_KIND_SERVER,
    trace_pb2.Span.SPAN_KIND_CLIENT,
    trace_pb2.Span.SPAN_KIND_PRODUCER,
    trace_pb2.Span.SPAN_KIND_CONSUMER,
)


@dataclass(frozen=True)
class Span:
    service: str
    proto: trace_pb2.Span

    @property
    def name(self) -> str:
        return self.proto.name

    @property
    def kind(self) -> int:
        return self.proto.kind

    @property
    def attributes(self) -> dict:
        values = {}
        for attribute in self.proto.attributes:
            value = attribute.value
            values[attribute.key] = getattr(value, value.WhichOneof("value") or "string_value")
        return values

    def __repr__(self) -> str:
        return f"{self.service}:{self.name}"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector: keeps every span it is sent."""

    def __init__(self):
        self._spans: list[Span] = []
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - the service's name
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self._spans.append(Span(resource.get("service.name", ""), span))
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def trace(self, trace_id: bytes) -> list[Span]:
        return [s for s in self.spans if s.proto.trace_id == trace_id]


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


@dataclass
class Traced:
    faults: FaultMesh
    collector: Collector
    receiver: Receiver

    @property
    def mesh(self):
        return self.faults.mesh


@pytest.fixture(scope="module")
def traced(collector, tmp_path_factory) -> Iterator[Traced]:
    """A whole mesh of this module's own, exporting to the collector, with a webhook receiver."""
    spans, port = collector
    with (
        running_receiver() as receiver,
        fault_mesh(
            tmp_path_factory.mktemp("traced"),
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_BSP_SCHEDULE_DELAY="200",
            WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
            GATEWAY_BREAKER_FAIL_MAX="100",  # the retry test must not open it
        ) as faults,
    ):
        yield Traced(faults, spans, receiver)


def waited(predicate, timeout: float, seen):
    """wait_until, failing with what was seen instead (the shape a trace did reach)."""
    try:
        return wait_until(predicate, timeout=timeout, interval=0.25)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s; seen: {seen()}") from None


def traceparent() -> tuple[str, bytes, bytes]:
    """A caller's own traceparent: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    return f"00-{trace_id.hex()}-{span_id.hex()}-01", trace_id, span_id


def pay_in_a_trace(mesh, merchant, amount: int, **fields: str) -> tuple[Response, bytes, bytes]:
    """A card tokenized and a payment confirmed under a caller's own traceparent: (the
    answer, the trace id, the caller's span id)."""
    token = tokenize(mesh, merchant).body["id"]
    header, trace_id, caller_span = traceparent()
    paid = call(
        mesh.url("/v1/payment_intents"),
        "POST",
        {**merchant.auth(), "traceparent": header},
        {"amount": amount, "currency": "usd", "payment_method": token, "confirm": True, **fields},
    )
    return paid, trace_id, caller_span


def broken_links(spans: list[Span], root_parent: bytes = b"") -> list[Span]:
    """Spans whose parent is not in the trace (the root's parent is `root_parent`)."""
    ids = {s.proto.span_id for s in spans} | {root_parent}
    return [s for s in spans if s.proto.parent_span_id not in ids]


def shape(spans: list[Span]) -> set[tuple[str, int]]:
    return {(s.service, s.kind) for s in spans}


def test_one_payment_is_one_trace_from_envoy_to_the_merchants_webhook(traced):
    mesh, merchant, collector = traced.mesh, traced.faults.merchant, traced.collector
    created = post(
        mesh,
        merchant,
        "/v1/webhook_endpoints",
        {"url": traced.receiver.url("/traced"), "enabled_events": ["payment_intent.succeeded"]},
    )
    assert created.status == 200, created.body
    paid, trace_id, caller_span = pay_in_a_trace(mesh, merchant, 1500)
    assert paid.status == 200 and paid.body["status"] == "succeeded", paid.body
    intent = paid.body["id"]

    # The merchant's delivery carries a traceparent of the same trace, so they can join it.
    [delivery] = wait_until(lambda: traced.receiver.at("/traced"), timeout=30)
    assert delivery.headers["traceparent"].split("-")[1] == trace_id.hex()

    expected = {
        ("envoy", SERVER),  # Envoy's span (the tracer names it by its service)
        ("gateway", SERVER),  # CreatePaymentIntent
        ("gateway", CLIENT),  # gateway → vault, and the PSP's HTTP call
        ("vault", SERVER),  # the card's PSP token
        ("gateway", PRODUCER),  # the outbox relay's publish
        ("webhook", CONSUMER),  # webhook_svc takes the event
        ("webhook", CLIENT),  # the delivery to the merchant
    }

    def whole():  # every span in, and (each process exports on its own) no link broken
        spans = collector.trace(trace_id)
        names = {s.name for s in spans}
        linked = not broken_links(spans, root_parent=caller_span)
        return spans if expected <= shape(spans) and "webhook.deliver" in names and linked else None

    spans = waited(whole, 30, lambda: sorted(collector.trace(trace_id), key=repr))
    [root] = [s for s in spans if s.proto.parent_span_id == caller_span]
    assert root.service == "envoy"

    [rpc] = [s for s in spans if s.name.endswith("CreatePaymentIntent") and s.kind == SERVER]
    assert rpc.service == "gateway"
    assert rpc.attributes["intent.id"] == intent
    assert rpc.attributes["tenant"] == merchant.id
    assert rpc.attributes["psp"] == "sandbox"
    [charge] = [
        s
        for s in spans
        if s.kind == CLIENT and s.attributes.get("url.full", "").endswith("/v1/charges")
    ]
    assert charge.service == "gateway"
    assert charge.attributes["psp"] == "sandbox"
    assert charge.attributes["http.response.status_code"] == 200
    assert charge.attributes["http.request.resend_count"] == 0
    [deliver] = [s for s in spans if s.name == "webhook.deliver"]
    assert deliver.attributes["tenant"] == merchant.id
    assert deliver.attributes["intent.id"] == intent
    assert deliver.attributes["webhook.outcome"] == "succeeded"

    # Every log line of the payment, the deliverer's included, names the trace.
    for service, event in (("gateway", "rpc_completed"), ("webhook", "webhook_delivery")):
        log = (traced.mesh.log_dir / f"{service}.log").read_text()
        lines = [line for line in log.splitlines() if trace_id.hex() in line]
        assert any(f'"{event}' in line for line in lines), (service, lines[:3])

    # Health checks (Envoy probes every service every 2 s) make no span at all.
    assert [s for s in collector.spans if "grpc.health" in s.name] == []


def test_a_renewal_is_one_trace_from_the_scheduler_through_the_worker_to_the_psp(traced):
    mesh, merchant, collector = traced.mesh, traced.faults.merchant, traced.collector
    start = datetime(2030, 1, 15, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    token = tokenize(mesh, merchant).body["id"]
    body = {"payment_method": token, "amount": 2500, "currency": "usd", "interval": "month"}
    created = post(mesh, merchant, "/v1/subscriptions", {**body, "test_clock": clock})
    assert created.status == 200, created.body
    subscription = created.body["id"]
    advance(mesh, merchant, clock, start + timedelta(days=32), timeout=60)
    charged = wait_until(
        lambda: [r for r in rebills(mesh, merchant, subscription) if r["outcome"] == "succeeded"],
        timeout=30,
    )
    expected = {
        ("rebill", "INTERNAL"),  # rebill.schedule: the renewal's root
        ("rebill", PRODUCER),
        ("rebill-worker", CONSUMER),
        ("rebill-worker", CLIENT),  # worker → gateway
        ("gateway", SERVER),
        ("gateway", CLIENT),  # the PSP's HTTP call
    }

    def renewal_traces():
        roots = [
            s
            for s in collector.spans
            if s.name == "rebill.schedule" and s.attributes.get("subscription.id") == subscription
        ]
        return [collector.trace(root.proto.trace_id) for root in roots]

    def shapes(spans: list[Span]) -> set:
        return {(s.service, "INTERNAL" if s.name == "rebill.schedule" else s.kind) for s in spans}

    # Each process exports its spans in batches of its own: a consumer's may come in before
    # the producer's that is its parent, so the trace is whole once no link is broken.
    [spans] = waited(
        lambda: [t for t in renewal_traces() if expected <= shapes(t) and not broken_links(t)],
        30,
        lambda: [sorted(t, key=repr) for t in renewal_traces()],
    )
    [schedule] = [s for s in spans if not s.proto.parent_span_id]
    assert schedule.name == "rebill.schedule"
    assert schedule.attributes["tenant"] == merchant.id
    # The worker's (webhook_svc also consumes the renewal's domain events, in the same trace).
    [consume] = [s for s in spans if s.kind == CONSUMER and s.service == "rebill-worker"]
    assert consume.attributes["subscription.id"] == subscription
    assert consume.attributes["tenant"] == merchant.id
    [rpc] = [s for s in spans if s.name.endswith("CreatePaymentIntent") and s.kind == SERVER]
    assert rpc.attributes["intent.id"] in {r["payment_intent"] for r in charged}
    assert rpc.attributes["tenant"] == merchant.id

    log = (mesh.log_dir / "rebill_worker.log").read_text()
    trace_hex = schedule.proto.trace_id.hex()
    assert any(trace_hex in line and subscription in line for line in log.splitlines())


def test_a_payment_stuck_in_psp_retries_shows_each_attempt_failed(traced):
    mesh, merchant, collector = traced.mesh, traced.faults.merchant, traced.collector
    token = tokenize(mesh, merchant).body["id"]
    sandbox(mesh, "/_knobs", {"error_rate": 1, "operations": ["authorize"]})
    header, trace_id, _ = traceparent()
    try:
        call(
            mesh.url("/v1/payment_intents"),
            "POST",
            {**merchant.auth(), "traceparent": header},
            {"amount": 1700, "currency": "usd", "payment_method": token, "confirm": True},
        )
    finally:
        sandbox(mesh, "/_knobs", NO_FAULTS)
        # Three failed charges open the sandbox's breaker: closed again for the next test.
        close_sandbox_breaker(mesh, merchant)

    def attempts():
        found = [
            s
            for s in collector.trace(trace_id)
            if s.kind == CLIENT and s.attributes.get("url.full", "").endswith("/v1/charges")
        ]
        return found if len(found) >= 3 else None

    spans = wait_until(attempts, timeout=20)
    spans.sort(key=lambda s: s.proto.start_time_unix_nano)
    assert [s.attributes["http.request.resend_count"] for s in spans] == [0, 1, 2]
    assert {s.attributes["http.response.status_code"] for s in spans} == {503}
    assert {s.proto.status.code for s in spans} == {trace_pb2.Status.STATUS_CODE_ERROR}


def test_a_psp_webhook_about_a_payment_links_to_the_payments_trace(traced):
    mesh, merchant, collector = traced.mesh, traced.faults.merchant, traced.collector
    paid, trace_id, _ = pay_in_a_trace(mesh, merchant, 1900, capture_method="manual")
    assert paid.body["status"] == "requires_capture", paid.body
    intent = paid.body["id"]
    # The payment's event reached webhook_svc (it is how the webhook finds the trace).
    wait_until(
        lambda: traced.faults.scalar(
            "SELECT count(*) FROM webhook.events WHERE object_id = %s", (intent,)
        ),
        timeout=20,
    )
    dashboard(mesh, intent_row(traced.faults.infra, intent)["psp_reference"], "capture")

    [received] = wait_until(lambda: psp_webhook_spans_of(collector, intent), timeout=30)
    assert received.proto.trace_id != trace_id  # the PSP's call is a trace of its own
    assert [link.trace_id for link in received.proto.links] == [trace_id]
    assert received.attributes["psp"] == "sandbox"


def test_the_psps_echo_of_a_payment_links_to_the_payments_trace(traced):
    """The echo of our own capture is settled in webhook_svc without the gateway; its span
    still links to the payment's trace."""
    mesh, merchant, collector = traced.mesh, traced.faults.merchant, traced.collector
    paid, trace_id, _ = pay_in_a_trace(mesh, merchant, 2100)
    assert paid.body["status"] == "succeeded", paid.body
    intent = paid.body["id"]

    [received] = wait_until(lambda: psp_webhook_spans_of(collector, intent), timeout=30)
    assert [link.trace_id for link in received.proto.links] == [trace_id]
    assert (
        traced.faults.scalar(
            "SELECT reason FROM webhook.psp_inbox WHERE payment_intent = %s", (intent,)
        )
        == "echo_of_recorded_event"
    )


def psp_webhook_spans_of(collector, intent: str) -> list:
    """The spans of the PSP webhooks webhook_svc took in about the intent."""
    return [
        span
        for span in collector.spans
        if span.name.endswith("PspWebhookService/ReceivePspWebhook")
        and span.attributes.get("intent.id") == intent
    ]
