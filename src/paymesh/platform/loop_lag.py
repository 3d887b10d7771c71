"""How late this process's event loop runs its callbacks. A PSP call that "timed out" while
the loop was minutes behind says nothing about the PSP: its answer may have sat in the
socket while we were busy. Callers ask `worst_since()` before blaming the other side."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class LoopLag:
    def __init__(self, interval: float = 0.05, window_seconds: float = 60.0):
        self._interval = interval
        self._samples: deque[tuple[float, float]] = deque(maxlen=int(window_seconds / interval))

    async def run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self._interval)
            woke = time.monotonic()
            self._samples.append((woke, woke - asked - self._interval))

    def worst_since(self, since: float) -> float:
        """The longest the loop was late, in seconds, since `since` (time.monotonic())."""
        # Include the sample running now: a loop stuck right up to this moment has not
        # recorded it yet.
        worst = 0.0
        for woke, lag in reversed(self._samples):
            if woke < since:
                break
            worst = max(worst, lag)
        if self._samples:
            worst = max(worst, time.monotonic() - self._samples[-1][0] - self._interval)
        return worst
