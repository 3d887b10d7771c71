"""OpenTelemetry tracing: spans always exist (so logs carry trace ids); they are exported over
OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set, so an unset endpoint causes no error spam.

Sampling follows the SDK's own settings (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG; the
default samples every trace whose caller did not say otherwise), export is batched
(OTEL_BSP_*). Health checks and reflection are never traced: they were most of the spans.

Also here: the attributes the chapter names on spans, the messaging spans around RabbitMQ
(producer and consumer, context carried in the AMQP headers), and links to an earlier
trace kept as a `traceparent`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_prefix
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

tracer = trace.get_tracer("paymesh")

# Envoy probes every service every 2 s, Docker and Kubernetes too: none of it is a trace.
_UNTRACED = any_of(service_prefix("grpc.health."), service_prefix("grpc.reflection."))

# Object id prefixes → the span attribute the chapter names for them.
_OBJECT_ATTRIBUTES = {"pi_": "intent.id", "sub_": "subscription.id", "re_": "refund.id"}


def configure_tracing(service: str, otlp_endpoint: str | None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def server_interceptor() -> grpc.aio.ServerInterceptor:
    """The gRPC server span of every RPC but health checks and reflection."""
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(filter_=negate(_UNTRACED))
    return interceptor


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """gRPC client spans (and the traceparent sent along) for calls to other services."""
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(
        filter_=negate(_UNTRACED)
    )
    return interceptors


def annotate(**attributes: Any) -> None:
    """Sets attributes on the current span; None values are left out."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def annotate_object(object_id: str) -> None:
    """`intent.id`, `subscription.id` or `refund.id` on the current span, by the id's prefix."""
    for prefix, attribute in _OBJECT_ATTRIBUTES.items():
        if object_id.startswith(prefix):
            annotate(**{attribute: object_id})
            return


def current_traceparent() -> str:
    """The current span's W3C traceparent, or "" outside any span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def link_to(traceparent: str | None) -> None:
    """Links the current span to the span a stored traceparent names (another trace)."""
    if not traceparent:
        return
    linked = trace.get_current_span(propagate.extract({"traceparent": traceparent}))
    span_context = linked.get_span_context()
    span = trace.get_current_span()
    if span_context.is_valid and span.is_recording():
        span.add_link(span_context, {"link.reason": "same payment"})


def _messaging_attributes(exchange: str, routing_key: str, message_id: str) -> dict[str, str]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.message.id": message_id,
    }


def producer_headers(
    headers: Mapping[str, str], exchange: str, routing_key: str, message_id: str
) -> dict[str, str]:
    """A message's AMQP headers with a traceparent of a producer span (publish), child of the
    trace context the headers held when the event was written; that span ends at once: the
    broker's confirm is awaited for a whole batch."""
    parent = propagate.extract(dict(headers))
    span = tracer.start_span(
        f"{exchange} publish",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            **_messaging_attributes(exchange, routing_key, message_id),
            "messaging.operation.type": "publish",
        },
    )
    carrier = {k: v for k, v in headers.items() if k not in ("traceparent", "tracestate")}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    span.end()
    return carrier


@contextmanager
def consumer_span(
    queue: str, headers: Mapping[str, Any] | None, routing_key: str, message_id: str
) -> Iterator[trace.Span]:
    """The consumer span (process) of one message, continuing the trace its headers carry;
    current while the message is handled, so the handler's spans and logs join that trace."""
    carrier = {k: v for k, v in (headers or {}).items() if isinstance(v, str)}
    parent = propagate.extract(carrier)
    attributes = {
        **_messaging_attributes(queue, routing_key, message_id or ""),
        "messaging.operation.type": "process",
    }
    token = context.attach(parent)
    try:
        with tracer.start_as_current_span(
            f"{queue} process", kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            yield span
    finally:
        context.detach(token)


@contextmanager
def continued_span(
    name: str, traceparent: str | None, attributes: Mapping[str, Any]
) -> Iterator[trace.Span]:
    """A span that continues the trace a stored traceparent names (a new trace without one)."""
    parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
    with tracer.start_as_current_span(name, context=parent, attributes=attributes) as span:
        yield span


def record_failure(error: str) -> None:
    """Marks the current span failed with a short reason (no exception at hand)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_status(Status(StatusCode.ERROR, error))
