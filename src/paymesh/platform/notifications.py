"""Changes one process makes that every process must hear of at once (a revoked API key, a new
PSP route), over PostgreSQL's LISTEN/NOTIFY: the change's transaction sends the notification,
which PostgreSQL delivers on commit to every listening connection. A listener that lost its
connection may have missed some, so it reports a reconnect and its caller forgets everything
it remembered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.db import psycopg_conninfo

log = structlog.get_logger(__name__)


async def notify(connection: AsyncConnection, channel: str, payload: str) -> None:
    """Sends `payload` on `channel` when `connection`'s transaction commits."""
    await connection.execute(select(func.pg_notify(channel, payload)))


async def listen(
    engine: AsyncEngine,
    channel: str,
    on_notify: Callable[[str], None],
    on_reconnect: Callable[[], None],
    retry_seconds: float = 1.0,
) -> None:
    """Runs until cancelled: `on_notify(payload)` for each notification on `channel`, and
    `on_reconnect()` each time the listening connection was (re)made. `engine`: the process's
    session engine (on DATABASE_DIRECT_URL): through a transaction-pooling pgbouncer, LISTEN
    would hold for one statement on a server connection that then serves other clients."""
    conninfo = psycopg_conninfo(engine)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo,
                autocommit=True,
                connect_timeout=3,
                prepare_threshold=None,
                # A connection that died silently (no FIN) is noticed within a minute.
                keepalives=1,
                keepalives_idle=20,
                keepalives_interval=5,
                keepalives_count=4,
            ) as connection:
                await connection.execute(f'LISTEN "{channel}"')
                on_reconnect()
                async for notification in connection.notifies():
                    on_notify(notification.payload)
        except psycopg.Error as error:
            log.warning("notifications_lost", channel=channel, error=type(error).__name__)
            on_reconnect()
        await asyncio.sleep(retry_seconds)
