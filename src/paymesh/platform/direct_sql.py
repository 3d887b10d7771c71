"""Hot statements run straight on psycopg: defined with SQLAlchemy Core like every other
statement, compiled once to SQL text with PostgreSQL's own `$n` placeholders, and executed on
a psycopg connection pool in autocommit, where psycopg prepares them on the server after a
few runs. Raw cursors send the text as it is: psycopg's own `%(name)s` placeholders would be
parsed again on every call for any statement longer than its 4 KiB parse cache.

Why: through SQLAlchemy's asyncio layer one statement cost ≈ 0.7 ms of CPU, straight on
psycopg ≈ 0.26 ms (issue 9's profile). The parameters still pass through the dialect's own
bind processors (JSONB, booleans), so a statement means the same on either path."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg import pq
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from paymesh.platform.db import psycopg_conninfo

# A row as psycopg's dict_row gives it: column name → value.
Row = dict[str, Any]


@dataclass(frozen=True)
class CompiledStatement:
    sql: str  # with $1, $2, …: one number per parameter name, however often it is used
    compiled: Any  # sqlalchemy SQLCompiler: fills the statement's own literal values
    names: tuple[str, ...]  # the parameter of each $n, in order
    processors: tuple[tuple[str, Any], ...]  # (parameter, bind processor) where one is needed

    def params(self, given: dict[str, Any]) -> list[Any]:
        values = self.compiled.construct_params(given, _check=False)
        for name, process in self.processors:
            value = values[name]
            if value is not None:
                values[name] = process(value)
        return [values[name] for name in self.names]


def compile_statement(statement: ClauseElement, dialect: Dialect) -> CompiledStatement:
    numbered = cast(type[DefaultDialect], type(dialect))(paramstyle="numeric_dollar")
    compiled = cast(SQLCompiler, statement.compile(dialect=numbered))
    # An expanding IN would need SQLAlchemy's rendering on every call: use = ANY(array).
    assert not compiled.post_compile_params, "no expanding parameters on the direct path"
    processors = []
    for bind, name in compiled.bind_names.items():
        process = bind.type.dialect_impl(numbered).bind_processor(numbered)
        if process is not None:
            processors.append((name, process))
    return CompiledStatement(
        compiled.string, compiled, tuple(compiled.positiontup or ()), tuple(processors)
    )


# psycopg_pool tries again to make a connection that failed after 1, 2, 4, 8, … s, without a
# ceiling, so its next try may come as long after the database's return as the outage lasted
# (tries at 1, 3, 7, 15, 31, 63 s: a 20 s outage, 11 s later; a 62 s one, a minute later), and
# every call meanwhile waits out the pool's timeout (a 503). A try a second is cheap against a
# database that refuses at once.
MAX_RECONNECT_DELAY = 1.0


class CappedBackoff(AttemptWithBackoff):
    """psycopg_pool's schedule of connection attempts, its delay at most MAX_RECONNECT_DELAY."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, MAX_RECONNECT_DELAY)


class _Pool(AsyncConnectionPool):
    async def _add_connection(
        self, attempt: AttemptWithBackoff | None, growing: bool = False
    ) -> None:
        # The attempt travels with each retry, so the first one sets the whole schedule.
        attempt = attempt or CappedBackoff(timeout=self.reconnect_timeout)
        await super()._add_connection(attempt, growing)


class DirectSql:
    """A psycopg pool beside `engine`'s, on the same database. Statements are compiled on
    first use and kept by identity: pass statements that are built once (module constants,
    functools.cache), not new objects per call."""

    def __init__(
        self,
        engine: AsyncEngine,
        max_size: int = 10,
        *,
        prepare: bool = True,
        max_idle: float = 60.0,
    ):
        """`prepare=False`: never prepared on the server (a data path through a
        transaction-pooling pgbouncer before 1.21: see platform.db.create_engine)."""
        self._dialect = engine.dialect
        self._prepare = prepare
        self._pool = _Pool(
            psycopg_conninfo(engine),
            min_size=1,
            max_size=max_size,
            # While the database is unreachable a call fails in seconds (PoolTimeout is an
            # OperationalError: a 503), instead of queueing for psycopg_pool's default 30 s.
            timeout=5,
            # Connections beyond the first go after `max_idle` seconds unused, one per
            # `max_idle`: PostgreSQL's connection slots are shared by every process.
            max_idle=max_idle,
            open=False,
            # No check on checkout (a round trip per statement): the health probe pings the
            # pool (ping()), and a connection found broken, by it or by a statement (a 503),
            # is discarded and the others checked at once (after a database restart they are
            # all broken).
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "cursor_factory": psycopg.AsyncRawCursor,
                "connect_timeout": 3,
                **({} if prepare else {"prepare_threshold": None}),
            },
        )
        self._opened: asyncio.Future[None] | None = None
        self._checking: asyncio.Future[None] | None = None
        self._compiled: dict[int, tuple[ClauseElement, CompiledStatement]] = {}

    async def one(self, statement: ClauseElement, params: dict[str, Any]) -> Row | None:
        """The statement's first row (None if it returned none)."""
        rows = await self._run(statement, params, first_only=True)
        return rows[0] if rows else None

    async def all(
        self, statement: ClauseElement, params: dict[str, Any], *, prepare: bool = True
    ) -> list[Row]:
        """`prepare=False`: planned on every call, for the table's size at that moment. For a
        statement joining a batch to a table that grows fast: a prepared statement keeps the
        plan the server made while the table was small (a sequential scan) until the table
        is analyzed again."""
        return await self._run(statement, params, first_only=False, prepare=prepare)

    async def ping(self) -> None:
        """One round trip on a pooled connection (the health probe's): a connection that broke
        while idle is found, and the others checked, while the database is away; not by the
        first calls after its return."""
        await self._open()
        async with self._pool.connection() as connection:
            try:
                await connection.execute("SELECT 1", prepare=False)
            except psycopg.OperationalError:
                self._broken(connection)
                raise

    def _broken(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """After a failed statement: if its connection is broken, the others are checked too
        (after a database restart they all are)."""
        if connection.broken:
            self._checking = self._checking or asyncio.ensure_future(self._check())

    async def _run(
        self,
        statement: ClauseElement,
        params: dict[str, Any],
        first_only: bool,
        prepare: bool = True,
    ) -> list[Row]:
        compiled = self._compile(statement)
        await self._open()
        async with self._pool.connection() as connection:
            try:
                cursor = await connection.execute(
                    compiled.sql,
                    compiled.params(params),
                    prepare=None if prepare and self._prepare else False,
                )
            except psycopg.OperationalError:
                self._broken(connection)
                raise
            result = cursor.pgresult  # not .description: that builds every column's object
            if result is None or result.status != pq.ExecStatus.TUPLES_OK:
                return []
            # The pool's connections make rows with dict_row (its kwargs), which its type
            # does not know.
            if first_only:
                row = await cursor.fetchone()
                return [cast(Row, row)] if row is not None else []
            return cast(list[Row], await cursor.fetchall())

    async def _check(self) -> None:
        try:
            await self._pool.check()
        except Exception:  # noqa: BLE001, S110 - the next broken connection asks again
            pass
        finally:
            self._checking = None

    async def close(self) -> None:
        if self._opened is not None:
            await self._pool.close()

    def _compile(self, statement: ClauseElement) -> CompiledStatement:
        entry = self._compiled.get(id(statement))
        if entry is None or entry[0] is not statement:
            entry = (statement, compile_statement(statement, self._dialect))
            self._compiled[id(statement)] = entry
        return entry[1]

    async def _open(self) -> None:
        if self._opened is None:
            self._opened = asyncio.ensure_future(self._pool.open(wait=False))
        try:
            await self._opened
        except Exception:
            self._opened = None  # the next call tries again
            raise
