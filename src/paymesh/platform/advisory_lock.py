"""One holder at a time across every process of a service: a PostgreSQL session-level advisory
lock, held on a connection of its own for as long as the holder is active.

Whoever asks `held()` each round takes the lock if it is free, so a standby takes over within
a round of the holder's death: a process that dies, or loses its connection, loses its
session and with it the lock.

A holder that freezes instead (a stopped process, a host or network that hangs) keeps its
session, and the lock, until TCP notices: hours. With `stale_after`, the holder's asking
keeps its session visibly alive (each statement moves pg_stat_activity.state_change), and a
standby ends the session of a holder silent for longer, which frees the lock. The holder must
then ask at least every `stale_after` seconds, and what it guards must be safe beside a
deposed holder finishing its work."""

from __future__ import annotations

import contextlib
import zlib

import structlog
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

log = structlog.get_logger(__name__)


def lock_key(name: str) -> int:
    """A stable 32-bit key for a lock's name, the same in every process and release."""
    return zlib.crc32(name.encode())


# Ends the session holding the lock (a single-key advisory lock: classid 0, objid the key,
# objsubid 1) if it has been idle, its last statement done, for longer than :stale seconds.
_END_STALE_HOLDER = text(
    """
    SELECT pg_terminate_backend(a.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0
      AND l.objid = CAST(:key AS bigint)::oid AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND a.state = 'idle' AND a.state_change < now() - make_interval(secs => :stale)
    """
)


def _unpooled(engine: AsyncEngine) -> AsyncEngine:
    """Connections to the engine's database outside its pool. A held lock keeps its connection
    for as long as it is held: taken from the pool, a process's leaderships (recovery sweep,
    outbox relay, scheduler, audit checkpoints, reconciliation) would leave its requests
    without connections when the pool is small, and a round that needs one would wait on the
    others for good."""
    return create_async_engine(
        engine.url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,
        # A few statements per round: nothing worth preparing.
        connect_args={"connect_timeout": 3, "prepare_threshold": None},
    )


class SessionLock:
    """`engine`: the process's session engine (platform.db.create_session_engine, on
    DATABASE_DIRECT_URL), never a transaction-pooling pgbouncer, where the lock would stay
    on a server connection other clients use after the statement."""

    def __init__(self, engine: AsyncEngine, name: str, stale_after: float | None = None):
        self.name = name
        self._key = lock_key(name)
        self._connections = _unpooled(engine)
        self._holder: AsyncConnection | None = None
        self._stale_after = stale_after

    async def held(self) -> bool:
        """Whether this process holds the lock, taking it if it is free. Raises when the
        database cannot be reached (the lock is then not held)."""
        if self._holder is not None:
            try:
                await self._holder.execute(select(1))
                return True
            except Exception:  # noqa: BLE001 - the connection, and with it the lock, is gone
                await self.release()
        holder = await self._connections.connect()
        try:
            locked = await holder.scalar(select(func.pg_try_advisory_lock(self._key)))
        except BaseException:
            await holder.close()
            raise
        if not locked:
            try:
                if self._stale_after is not None:
                    await self._end_stale_holder(holder, self._stale_after)
            finally:
                await holder.close()
            return False
        self._holder = holder
        return True

    async def _end_stale_holder(self, connection: AsyncConnection, stale_after: float) -> None:
        ended = await connection.scalar(
            _END_STALE_HOLDER, {"key": self._key, "stale": float(stale_after)}
        )
        if ended:
            log.warning("lock_holder_ended", lock=self.name, silent_for=stale_after)

    async def release(self) -> None:
        """Gives the lock up (closing its connection ends the session, and the lock)."""
        holder, self._holder = self._holder, None
        if holder is not None:
            with contextlib.suppress(Exception):
                await holder.invalidate()  # never back to the pool with the lock held
            with contextlib.suppress(Exception):
                await holder.close()
