"""Who works the rebill queues and how much work waits, read from PostgreSQL: what
rebill_workers_alive, rebill_queue_depth and the leader's rebill_worker_heartbeat_age_seconds
report.

Depth comes from the jobs' own states, not from RabbitMQ: a job `queued` is published and
waits for a worker (ready), a job `running` is held by a worker under its lease (unacked).
RabbitMQ's passive declare tells ready messages only, and its unacked count needs the
management API, which a deployment may not enable; the table also stays true when a queue
is lost (the job is republished) or a frozen worker's jobs were reclaimed (RabbitMQ still
holds its deliveries unacked, though the work is back in the queue once, not twice).

Workers: each beats its row every third of a lease, so one silent for a whole lease is not
alive; a worker that stopped cleanly removes its row; a row silent for FORGET_AFTER_SECONDS
(a worker killed long ago) is dropped."""

from __future__ import annotations

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.db import autocommit
from rebill_svc.domain.jobs import JobStatus
from rebill_svc.tables import rebill_jobs, rebill_workers

FORGET_AFTER_SECONDS = 3600.0
DEPTH_STATES = {JobStatus.QUEUED: "ready", JobStatus.RUNNING: "unacked"}


class Workforce:
    def __init__(self, engine: AsyncEngine):
        self._engine = autocommit(engine)

    async def beat(self, owner: str) -> None:
        row = insert(rebill_workers).values(owner=owner)
        async with self._engine.connect() as connection:
            await connection.execute(
                row.on_conflict_do_update(index_elements=["owner"], set_={"beat_at": func.now()})
            )

    async def leave(self, owner: str) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(delete(rebill_workers).where(rebill_workers.c.owner == owner))

    async def census(self, alive_within: float) -> tuple[int, float]:
        """(workers that beat within `alive_within` seconds, seconds since the stalest one
        beat); forgets workers silent for FORGET_AFTER_SECONDS."""
        silence = func.extract("epoch", func.now() - rebill_workers.c.beat_at)
        async with self._engine.connect() as connection:
            await connection.execute(
                delete(rebill_workers).where(
                    rebill_workers.c.beat_at
                    < func.now() - text(f"interval '{int(FORGET_AFTER_SECONDS)} seconds'")
                )
            )
            alive, stalest = (
                await connection.execute(
                    select(
                        func.count().filter(silence <= alive_within),
                        func.coalesce(func.max(silence), 0),
                    )
                )
            ).one()
        return int(alive), float(stalest)

    async def depth(self) -> dict[tuple[str, str], int]:
        """{(queue, "ready" | "unacked"): jobs}."""
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(rebill_jobs.c.queue, rebill_jobs.c.status, func.count())
                .where(rebill_jobs.c.status.in_(DEPTH_STATES))
                .group_by(rebill_jobs.c.queue, rebill_jobs.c.status)
            )
            return {(queue, DEPTH_STATES[status]): count for queue, status, count in rows}
