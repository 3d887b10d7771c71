"""structlog JSON logs: one event per line on stdout, with correlation_id, trace_id and
merchant_id bound through contextvars. Standard-library loggers (grpc, alembic, pika) are
rendered the same way."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

from paymesh.platform.masking import mask_event


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event.setdefault("span_id", format(span_context.span_id, "016x"))
    return event


def configure_logging(service: str, level: str = "INFO", stream: TextIO = sys.stdout) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        lambda _l, _m, event: {"service": service, **event},
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            mask_event,  # after format_exc_info: tracebacks are masked too
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                mask_event,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pika narrates every connection step and httpx every request at INFO; their warnings
    # are what matter (our own events already say what a call did).
    # botocore's DEBUG prints whole responses: a secret's value from Secrets Manager with
    # them (paymesh.platform.secrets). Never below INFO, whatever LOG_LEVEL says.
    for chatty in ("pika", "httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
