"""One holder at a time across every process of a service: a PostgreSQL session-level advisory
lock, held on a connection of its own for as long as the holder is active.

Whoever asks `held()` each round takes the lock if it is free, so a standby takes over within
a round of the holder's death: a process that dies, or loses its connection, loses its
session and with it the lock."""

from __future__ import annotations

import contextlib
import zlib

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.db import autocommit


def lock_key(name: str) -> int:
    """A stable 32-bit key for a lock's name, the same in every process and release."""
    return zlib.crc32(name.encode())


class SessionLock:
    def __init__(self, engine: AsyncEngine, name: str):
        self.name = name
        self._key = lock_key(name)
        self._autocommit = autocommit(engine)
        self._holder: AsyncConnection | None = None

    async def held(self) -> bool:
        """Whether this process holds the lock, taking it if it is free. Raises when the
        database cannot be reached (the lock is then not held)."""
        if self._holder is not None:
            try:
                await self._holder.execute(select(1))
                return True
            except Exception:  # noqa: BLE001 - the connection, and with it the lock, is gone
                await self.release()
        holder = await self._autocommit.connect()
        try:
            locked = await holder.scalar(select(func.pg_try_advisory_lock(self._key)))
        except BaseException:
            await holder.close()
            raise
        if not locked:
            await holder.close()
            return False
        self._holder = holder
        return True

    async def release(self) -> None:
        """Gives the lock up (closing its connection ends the session, and the lock)."""
        holder, self._holder = self._holder, None
        if holder is not None:
            with contextlib.suppress(Exception):
                await holder.invalidate()  # never back to the pool with the lock held
            with contextlib.suppress(Exception):
                await holder.close()
