"""The renewal scheduler: any number of replicas, one active leader (a PostgreSQL session
advisory lock on a connection of its own; a standby takes it within `standby_poll` seconds
of the leader's death, and within `stale_after` of its freezing). Each full round it starts
the periods that fell due, queues the declined periods whose retry is due, and re-publishes
jobs whose lease lapsed. A full round runs at least every `idle_seconds`, at once when a clock
moves or a subscription resumes, and again right after one that found work. A settle whose
subscription's next period is due already (a test clock advanced a year bills period after
period) wakes a small round over just the subscriptions that settled: a full scan per settle
would cost the database more than the renewal itself.

Its scan position is the data itself: a subscription's `current_period_end` moves forward
when its period is scheduled, so the due scan (an index range) resumes where it stopped after
any restart and never rescans what was done."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from paymesh.platform.advisory_lock import SessionLock
from paymesh.platform.amqp_consumer import ready_counts
from paymesh.platform.notifications import listen
from rebill_svc.jobs.store import JobStore
from rebill_svc.metrics import (
    HEARTBEAT_AGE,
    QUEUE_DEPTH,
    SCHEDULED,
    SCHEDULER_LEADER,
    WORKERS_ALIVE,
)
from rebill_svc.records import WAKE_CHANNEL
from rebill_svc.topology import DEAD_QUEUE, JOB_QUEUES
from rebill_svc.workforce import Workforce

log = structlog.get_logger(__name__)


class Scheduler:
    def __init__(
        self,
        session_engine,
        jobs: JobStore,
        *,
        batch_size: int,
        idle_seconds: float,
        requeue_after: float,
        standby_poll: float = 1.0,
        stale_after: float = 6.0,
        workforce: Workforce | None = None,
        lease_seconds: float = 30.0,
    ):
        # Its leader lock and its LISTEN: session state, on DATABASE_DIRECT_URL.
        self._engine = session_engine
        self._jobs = jobs
        self._workforce = workforce
        self._lease_seconds = lease_seconds
        self._lock = SessionLock(session_engine, "rebill-scheduler", stale_after=stale_after)
        self._leader = False
        self._batch = batch_size
        self._idle = idle_seconds
        self._requeue_after = requeue_after
        self._standby_poll = standby_poll
        self._wake = asyncio.Event()
        self._everything = True  # the next round is a full one
        self._settled: set[str] = set()  # subscriptions settled since the last round
        self._last_error_logged = 0.0

    def _woken(self, subscription_id: str = "") -> None:
        if subscription_id:
            self._settled.add(subscription_id)
        else:
            self._everything = True
        self._wake.set()

    async def run(self) -> None:
        listener = asyncio.create_task(listen(self._engine, WAKE_CHANNEL, self._woken, self._woken))
        holder = asyncio.create_task(self._hold_lock())
        try:
            await self._run()
        finally:
            listener.cancel()
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holder
            SCHEDULER_LEADER.set(0)
            await self._lock.release()

    async def _hold_lock(self) -> None:
        """Asks about the lock every standby_poll, rounds or not: a standby takes it when it
        is free, and the leader's asking is what shows it alive (a standby ends the session
        of a leader silent for stale_after). A deposed leader's last rounds beside its
        successor's are safe (see JobStore.schedule_due)."""
        while True:
            try:
                leader = await self._lock.held()
            except Exception as error:  # noqa: BLE001 - no database: not the leader
                self._log_error(error)
                leader = False
            if leader and not self._leader:
                self._wake.set()  # a new leader starts at once
            self._leader = leader
            SCHEDULER_LEADER.set(1 if leader else 0)
            await asyncio.sleep(self._standby_poll)

    async def _run(self) -> None:
        full_round_at = 0.0
        while True:
            if not self._leader:
                self._everything = True  # a new leader starts with a full round
                self._settled.clear()
                self._wake.clear()  # woken when this process takes the lock
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._standby_poll)
                continue
            self._wake.clear()
            full = self._everything or time.monotonic() - full_round_at >= self._idle
            settled, self._settled = sorted(self._settled), set()
            try:
                if full:
                    self._everything = False
                    full_round_at = time.monotonic()
                    done = await self.round()
                    if done:  # more may be due than one batch: another full round at once
                        self._everything = True
                else:
                    await self.settled_round(settled)
                    done = 0
            except Exception as error:  # noqa: BLE001 - the next round tries again
                self._log_error(error)
                if full:
                    self._everything = True
                self._settled.update(settled)
                done = 0
            if not done:
                # Sleep until woken, or the next full round (retries come due by time).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle)

    async def round(self) -> int:
        """One pass over what is due; returns how many jobs it moved."""
        renewed = await self._jobs.schedule_due(self._batch)
        retried = await self._jobs.queue_due_retries(self._batch)
        reclaimed = await self._jobs.reclaim_stale(self._batch, self._requeue_after)
        SCHEDULED.labels("period").inc(renewed)
        SCHEDULED.labels("retry").inc(retried)
        SCHEDULED.labels("reclaimed").inc(reclaimed)
        if reclaimed:
            log.info("rebill_jobs_reclaimed", count=reclaimed)
        age = await self._jobs.oldest_heartbeat_age()
        if self._workforce is not None:  # a frozen worker whose jobs were reclaimed, too
            age = max(age, (await self._workforce.census(self._lease_seconds))[1])
        HEARTBEAT_AGE.set(age)
        return renewed + retried + reclaimed

    async def settled_round(self, subscription_ids: list[str]) -> None:
        """Starts the next period of those of `subscription_ids` that are due."""
        for start in range(0, len(subscription_ids), self._batch):
            among = subscription_ids[start : start + self._batch]
            SCHEDULED.labels("period").inc(await self._jobs.schedule_due(self._batch, among))

    def _log_error(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_logged > 30:
            self._last_error_logged = now
            log.warning("rebill_scheduler_failed", error=f"{type(error).__name__}: {error}")


async def watch_workforce(
    workforce: Workforce, amqp_url: str, lease_seconds: float, interval: float = 2.0
) -> None:
    """rebill_queue_depth{queue,state} and rebill_workers_alive every `interval` seconds:
    the job queues from the jobs' states (rebill_svc.workforce says why), the dead-letter
    queue's ready messages from RabbitMQ."""
    while True:
        try:
            depth = await workforce.depth()
            for queue in JOB_QUEUES:
                for state in ("ready", "unacked"):
                    QUEUE_DEPTH.labels(queue, state).set(depth.get((queue, state), 0))
            WORKERS_ALIVE.set((await workforce.census(lease_seconds))[0])
        except Exception as error:  # noqa: BLE001 - the database is down; health says so
            log.debug("rebill_workforce_unreadable", error=type(error).__name__)
        try:
            dead = await asyncio.to_thread(ready_counts, amqp_url, (DEAD_QUEUE,))
            QUEUE_DEPTH.labels(DEAD_QUEUE, "ready").set(dead[DEAD_QUEUE])
        except Exception as error:  # noqa: BLE001 - the broker is down; health says so
            log.debug("rebill_queue_depth_unreadable", error=type(error).__name__)
        await asyncio.sleep(interval)
