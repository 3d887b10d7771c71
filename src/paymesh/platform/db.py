"""PostgreSQL through SQLAlchemy 2 (asyncio) and psycopg 3."""

from __future__ import annotations

from sqlalchemy import ColumnElement, literal_column, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool


def sqlalchemy_url(database_url: str) -> str:
    """Accepts plain `postgresql://` URLs and selects the psycopg 3 driver."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def psycopg_conninfo(engine: AsyncEngine) -> str:
    """`engine`'s database as a plain libpq URL, for connections psycopg makes itself."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def named(database_url: str, application_name: str | None) -> str:
    """`database_url` with an application_name (unless it names one): pg_stat_activity then
    says which process, and which of its pools, holds each connection."""
    url = make_url(database_url)
    if application_name is None or "application_name" in url.query:
        return database_url
    return url.update_query_dict({"application_name": application_name}).render_as_string(
        hide_password=False
    )


def create_engine(
    database_url: str, pool_size: int = 10, *, keep: int = 2, prepare: bool = True
) -> AsyncEngine:
    """At most `pool_size` connections, `keep` of them kept open while idle (each one beyond
    is closed when it comes back). The hot statements run on platform.direct_sql's pool of
    its own (as many again): PostgreSQL's connection slots are shared by every process.
    `prepare=False`: no server-side prepared statements (psycopg prepares a statement after
    a few runs), for a data path through a transaction-pooling pgbouncer before 1.21, where
    the next transaction may run on another server connection."""
    keep = max(1, min(keep, pool_size))
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=keep,
        max_overflow=max(1, pool_size - keep),
        # No pre-ping: it would double the round trips of every one-statement call. A
        # connection error instead invalidates the whole pool (SQLAlchemy does this on any
        # disconnect), and the health probe, which runs every few seconds, usually meets a
        # database restart first.
        pool_pre_ping=False,
        # Statement parameters carry billing details and secrets: keep them out of errors.
        hide_parameters=True,
        # Fail fast while the database is unreachable, so health flips instead of hanging.
        connect_args={"connect_timeout": 3, **({} if prepare else {"prepare_threshold": None})},
    )


def create_session_engine(database_url: str) -> AsyncEngine:
    """The process's way to session connections (DATABASE_DIRECT_URL): advisory locks
    (platform.advisory_lock) and LISTEN (platform.notifications) open their own connections
    from its URL, each for as long as its session state must live. Pools nothing."""
    return create_async_engine(
        sqlalchemy_url(database_url),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,
        connect_args={"connect_timeout": 3, "prepare_threshold": None},
    )


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same pool without BEGIN/ROLLBACK around each statement: for single-statement reads,
    where a transaction only adds two round trips."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def ping(engine: AsyncEngine) -> None:
    async with autocommit(engine).connect() as connection:
        await connection.execute(text("SELECT 1"))


def constant(value: str) -> ColumnElement[str]:
    """`value` written into the SQL, not sent as a parameter. Use it where a statement must
    match a partial index's predicate (`state = 'running'`): psycopg prepares a statement on
    the server after a few runs, and PostgreSQL's generic plan for it cannot prove a
    parameter equal to the index's constant, so it scans the whole table instead."""
    if not value.replace("_", "").isalnum():
        raise ValueError(f"not a plain word: {value!r}")
    return literal_column(f"'{value}'")
