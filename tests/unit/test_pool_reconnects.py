"""The direct pool's connection attempts after a failure stay a second apart however long the
database was away: psycopg_pool's own schedule doubles without a ceiling, so after a long
outage its next try came long after the database was back."""

from __future__ import annotations

import asyncio

import psycopg
from sqlalchemy.ext.asyncio import create_async_engine

from paymesh.platform.direct_sql import MAX_RECONNECT_DELAY, CappedBackoff, DirectSql


def test_the_delay_between_attempts_is_capped():
    attempt = CappedBackoff(timeout=300)
    delays = []
    for second in range(12):
        attempt.update_delay(float(second))
        delays.append(attempt.delay)
    assert delays[0] <= MAX_RECONNECT_DELAY * 1.1  # psycopg_pool's first, with its jitter
    assert max(delays[1:]) == MAX_RECONNECT_DELAY


def test_the_pool_schedules_every_retry_on_the_capped_backoff():
    engine = create_async_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    pool = DirectSql(engine)._pool
    scheduled = []

    async def refused():
        raise psycopg.OperationalError("connection refused")

    async def schedule_task(task, delay):
        scheduled.append((task.attempt, delay))

    pool._connect = refused
    pool.schedule_task = schedule_task

    async def attempts():
        await pool._add_connection(None)
        for _ in range(10):
            await pool._add_connection(scheduled[-1][0])

    asyncio.run(attempts())
    assert all(isinstance(attempt, CappedBackoff) for attempt, _ in scheduled)
    assert max(delay for _, delay in scheduled) <= MAX_RECONNECT_DELAY * 1.1
