"""Client spans of outgoing HTTP calls (the PSPs, merchants' webhook endpoints), through the
OpenTelemetry aiohttp and httpx instrumentations: one span per request, with its URL (never its
query string: a merchant's URL may carry a token there), status, and which retry of one
operation it is. The instrumentations also send the span's `traceparent` with the request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import aiohttp
import httpx
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import Span
from yarl import URL

# Which retry of one operation the request in flight is (0: the first attempt). Set by
# whoever retries, read when the request's span starts.
_RESEND = ContextVar("http_resend_count", default=0)


@contextmanager
def resend(count: int) -> Iterator[None]:
    """Marks the HTTP requests made inside as retry number `count` of one operation."""
    token = _RESEND.set(count)
    try:
        yield
    finally:
        _RESEND.reset(token)


def _without_query(url: URL) -> str:
    return str(url.with_query(None).with_fragment(None))


def _request_attributes(url: Any, attributes: dict[str, str]) -> dict[str, Any]:
    return {
        **attributes,
        "url.full": _without_query(URL(str(url))),
        "http.request.resend_count": _RESEND.get(),
    }


def aiohttp_tracing(**attributes: str) -> list[aiohttp.TraceConfig]:
    """`trace_configs` for an aiohttp session whose requests each get a client span."""

    def on_request(span: Span | None, params: aiohttp.TraceRequestStartParams) -> None:
        if span is not None and span.is_recording():
            span.set_attributes(_request_attributes(params.url, attributes))

    def on_response(span: Span | None, params: Any) -> None:
        if span is not None and span.is_recording() and hasattr(params, "response"):
            span.set_attribute("http.response.status_code", params.response.status)

    return [
        create_trace_config(
            url_filter=_without_query, request_hook=on_request, response_hook=on_response
        )
    ]


def trace_httpx(client: httpx.AsyncClient, **attributes: str) -> httpx.AsyncClient:
    """The same spans for an httpx client's requests."""

    async def on_request(span: Span | None, request: Any) -> None:
        if span is not None and span.is_recording():
            span.set_attributes(_request_attributes(request.url, attributes))

    async def on_response(span: Span | None, request: Any, response: Any) -> None:
        if span is not None and span.is_recording():
            span.set_attribute("http.response.status_code", response[0])

    HTTPXClientInstrumentor.instrument_client(
        client, request_hook=on_request, response_hook=on_response
    )
    return client
