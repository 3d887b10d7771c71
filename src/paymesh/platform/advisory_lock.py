"""One holder at a time across every process of a service: a PostgreSQL session-level advisory
lock, held for as long as the holder is active on a session connection of the process's own
(one for every lock the process holds, straight to PostgreSQL: DATABASE_DIRECT_URL).

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

import asyncio
import contextlib
import weakref
import zlib
from typing import Any

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
      AND a.pid <> pg_backend_pid()
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


class _Session:
    """The one session every lock made from an engine shares: a process holds all its locks
    (recovery sweep, outbox relay, scheduler, audit checkpoints, reconciliation) on one
    connection, not one each. Its statements run one at a time. When the connection breaks
    (or a standby ends it) every lock on it is lost at once, as when the process dies."""

    def __init__(self, engine: AsyncEngine):
        self._connections = _unpooled(engine)
        self._connection: AsyncConnection | None = None
        self._guard = asyncio.Lock()
        self.held: set[int] = set()  # the keys this session holds

    async def scalar(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        async with self._guard:
            if self._connection is None:
                self._connection = await self._connections.connect()
                self.held.clear()
            try:
                return await self._connection.scalar(statement, params or {})
            except BaseException:
                await self._drop()  # a broken (or interrupted) session: its locks are gone
                raise

    async def close_if_unused(self) -> None:
        async with self._guard:
            if not self.held:
                await self._drop()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self.held.clear()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()  # never back to a pool with a lock held
            with contextlib.suppress(Exception):
                await connection.close()


_SESSIONS: weakref.WeakKeyDictionary[AsyncEngine, _Session] = weakref.WeakKeyDictionary()


class SessionLock:
    """`engine`: the process's session engine (platform.db.create_session_engine, on
    DATABASE_DIRECT_URL), never a transaction-pooling pgbouncer, where the lock would stay
    on a server connection other clients use after the statement. Every lock made from one
    engine is held on the same connection (one per process, however many leaderships)."""

    def __init__(self, engine: AsyncEngine, name: str, stale_after: float | None = None):
        self.name = name
        self._key = lock_key(name)
        session = _SESSIONS.get(engine)
        if session is None:
            session = _SESSIONS[engine] = _Session(engine)
        self._session = session
        self._stale_after = stale_after

    async def held(self) -> bool:
        """Whether this process holds the lock, taking it if it is free. Raises when the
        database cannot be reached (the lock is then not held)."""
        session = self._session
        if self._key in session.held:
            with contextlib.suppress(Exception):  # the session, and with it the lock, is gone
                await session.scalar(select(1))
            if self._key in session.held:
                return True
        if await session.scalar(select(func.pg_try_advisory_lock(self._key))):
            session.held.add(self._key)
            return True
        if self._stale_after is not None:
            await self._end_stale_holder(self._stale_after)
        return False

    async def _end_stale_holder(self, stale_after: float) -> None:
        ended = await self._session.scalar(
            _END_STALE_HOLDER, {"key": self._key, "stale": float(stale_after)}
        )
        if ended:
            log.warning("lock_holder_ended", lock=self.name, silent_for=stale_after)

    async def release(self) -> None:
        """Gives the lock up; the session ends once it holds no lock."""
        session = self._session
        if self._key in session.held:
            session.held.discard(self._key)
            with contextlib.suppress(Exception):
                await session.scalar(select(func.pg_advisory_unlock(self._key)))
        with contextlib.suppress(Exception):
            await session.close_if_unused()
