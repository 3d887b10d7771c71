"""What the scheduler, the workers' runner and the worker ask of rebill's jobs: one job per
(subscription, period), at most one unsettled job per subscription, every transition one
transaction with its audit row and outbox rows, a worker's writes fenced by its lease.
`PostgresJobStore` keeps them in PostgreSQL, `InMemoryJobStore` in dictionaries (unit tests)."""

from __future__ import annotations

from typing import Protocol

from rebill_svc.domain.dunning import Outcome
from rebill_svc.domain.subscriptions import AfterAttempt
from rebill_svc.jobs.models import Claimed, Settled


class JobStore(Protocol):
    # --- the scheduler ------------------------------------------------------------------

    async def schedule_due(self, batch: int, among: list[str] | None = None) -> int:
        """Starts the next period of up to `batch` subscriptions whose period ended (or
        cancels those set to end with it), of all or only of the subscriptions `among`;
        returns how many it handled."""

    async def queue_due_retries(self, batch: int) -> int:
        """Hands every declined period whose next attempt is due to the workers."""

    async def reclaim_stale(self, batch: int, requeue_after: float) -> int:
        """Publishes again the jobs whose lease lapsed, or that waited for a worker longer
        than `requeue_after` seconds (a message lost with its queue)."""

    async def oldest_heartbeat_age(self) -> float:
        """Seconds since the stalest running job's worker last beat (0: none running)."""

    # --- a worker -----------------------------------------------------------------------

    async def exists(self, job_id: str) -> bool: ...

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> Claimed | None:
        """Takes the job's lease if it waits for a worker (or its lease expired); None when
        it is settled or another worker holds it."""

    async def heartbeat(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Extends the lease; False if it was lost (another worker may run the job now)."""

    async def settle(
        self,
        claimed: Claimed,
        owner: str,
        *,
        outcome: Outcome | None,
        decline_code: str,
        payment_intent: str,
        idempotency_key: str,
        after: AfterAttempt,
        decided_on: str | None,
        recheck_after: float,
        actor: str = "worker",
    ) -> Settled:
        """Records the attempt's outcome (None: the attempt did not run, the subscription
        ended first) and what follows from it, if the subscription's status is still
        `decided_on`, the one `after` was decided on (None: whatever it is). Nothing is
        recorded if the lease was lost meanwhile, or the status changed: the caller then
        decides again on the status returned."""
