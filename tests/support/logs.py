"""The services' logs as they would be written (JSON lines through paymesh's logging), kept
in memory for a test to read."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from paymesh.platform.logging import configure_logging


@contextmanager
def service_logs(service: str = "test") -> Iterator[io.StringIO]:
    """Everything logged inside the block, at every level, as the service would write it."""
    stream = io.StringIO()
    configure_logging(service, "DEBUG", stream=stream)
    # Loggers bound before this block would keep their old output: bind on every call here.
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield stream
    finally:
        structlog.reset_defaults()
