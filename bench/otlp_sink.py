"""An OTLP/gRPC trace sink for benchmarks run with tracing on: it takes every export, counts
the spans (by service), and keeps none. It runs in the benchmark's process, so its CPU is not
counted as the mesh's."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class SpanCounter(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.by_service: Counter[str] = Counter()
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - the service's name
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                self.by_service[service] += sum(len(s.spans) for s in resource_spans.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def total(self) -> int:
        with self._lock:
            return sum(self.by_service.values())


@contextmanager
def otlp_sink() -> Iterator[tuple[SpanCounter, str]]:
    """(the counter, its OTEL_EXPORTER_OTLP_ENDPOINT)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    counter = SpanCounter()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counter, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield counter, f"http://127.0.0.1:{port}"
    finally:
        server.stop(None)
