"""Polling helpers: wait for something observable instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.1) -> T:
    """The first truthy value of `predicate()`; raises TimeoutError when time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


def wait_for_text(path: Path, text: str, timeout: float = 5.0) -> bool:
    return wait_until(lambda: path.exists() and text in path.read_text(), timeout)
