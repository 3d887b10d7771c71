"""A keyed semaphore: how the deliverer keeps one object's events in order and one endpoint's
sends within its limit."""

from __future__ import annotations

import asyncio
import contextlib


class Gates:
    """A semaphore of `size` per key, made on first use and dropped once nobody holds or
    awaits it; waiters go in the order they came."""

    def __init__(self, size: int):
        self._size = size
        self._gates: dict[object, tuple[asyncio.Semaphore, int]] = {}

    def users(self, key: object) -> int:
        """How many hold or await the key's gate."""
        return self._gates.get(key, (None, 0))[1]

    def busy(self, limit: int) -> list:
        """The keys held or awaited by `limit` users or more."""
        return [key for key, (_, users) in self._gates.items() if users >= limit]

    @contextlib.asynccontextmanager
    async def held(self, key: object):
        gate, users = self._gates.get(key) or (asyncio.Semaphore(self._size), 0)
        self._gates[key] = (gate, users + 1)
        try:
            async with gate:
                yield
        finally:
            gate, users = self._gates[key]
            if users == 1:
                del self._gates[key]
            else:
                self._gates[key] = (gate, users - 1)
