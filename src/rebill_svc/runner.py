"""Runs one rebill job's current attempt under a lease: charge through the gateway, then
record the outcome and what the merchant's retry policy makes of it, in one transaction.
Workers run every job this way, and so does a subscription's creation for its first period."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import structlog

from paymesh.platform.callers import Merchant
from paymesh.platform.tracing import annotate
from rebill_svc.charging import ChargeRequest, ChargeResult, GatewayCharger
from rebill_svc.domain.dunning import Outcome, idempotency_key, next_step
from rebill_svc.domain.subscriptions import NOT_ATTEMPTED, Status, after_attempt
from rebill_svc.jobs.models import Claimed
from rebill_svc.jobs.store import JobStore
from rebill_svc.metrics import JOB_DURATION, JOBS_FAILED, JOBS_PROCESSED

log = structlog.get_logger(__name__)

# A subscription in one of these states is not charged for a period not yet attempted.
_NOT_CHARGED = (Status.CANCELED, Status.PAUSED, Status.UNPAID)

# How many times an outcome is decided again on a status that changed under the settle.
_DECISIONS = 4


@dataclass(frozen=True)
class Leases:
    lease_seconds: float = 30.0  # a worker that stops beating loses its job after this
    recheck_seconds: float = 10.0  # an unknown outcome is asked about again after this


class JobRunner:
    def __init__(self, jobs: JobStore, charger: GatewayCharger, owner: str, leases: Leases):
        self._jobs = jobs
        self._charger = charger
        self._owner = owner
        self._leases = leases
        self._beats: dict[str, float] = {}  # held job → when its lease was last extended

    def heartbeat_age(self) -> float:
        """Seconds since the stalest job this process holds had its lease extended (0: it
        holds none). A worker whose beats fail (no database) shows it here first."""
        if not self._beats:
            return 0.0
        return time.monotonic() - min(self._beats.values())

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def lease_seconds(self) -> float:
        return self._leases.lease_seconds

    async def run(self, job_id: str) -> bool:
        """Runs the job if it is waiting for a worker; False when it is settled or held by
        another worker."""
        claimed = await self._jobs.claim(job_id, self._owner, self._leases.lease_seconds)
        if claimed is None:
            return False
        await self.run_claimed(claimed)
        return True

    async def run_claimed(self, claimed: Claimed) -> None:
        job = claimed.job
        structlog.contextvars.bind_contextvars(
            job_id=job.id, subscription_id=job.subscription_id, attempt=job.attempt
        )
        annotate(
            **{"subscription.id": job.subscription_id, "tenant": job.merchant_id},
            **{"rebill.job.id": job.id, "rebill.attempt": job.attempt},
        )
        started = time.perf_counter()
        key = idempotency_key(job.subscription_id, job.period_start, job.attempt)
        if claimed.subscription_status in _NOT_CHARGED and not claimed.rerun:
            # Ended before this attempt started: the period is not charged. A re-run goes on
            # under the attempt's key instead: its first run may have charged before dying.
            await self._jobs.settle(
                claimed,
                self._owner,
                outcome=None,
                decline_code="",
                payment_intent="",
                idempotency_key=key,
                after=NOT_ATTEMPTED,
                decided_on=None,  # not charged: nothing to decide again
                recheck_after=self._leases.recheck_seconds,
            )
            JOBS_FAILED.labels(f"subscription_{claimed.subscription_status}").inc()
            return
        self._beats[job.id] = time.monotonic()  # the claim took the lease
        heartbeat = asyncio.create_task(self._beat(job.id))
        try:
            result = await self._charger.charge(
                ChargeRequest(
                    merchant=Merchant(job.merchant_id, job.livemode),
                    payment_method=claimed.payment_method,
                    amount=job.amount,
                    currency=job.currency,
                    idempotency_key=key,
                    subscription_id=job.subscription_id,
                    period_start=job.period_start.isoformat(),
                    attempt=job.attempt,
                )
            )
        finally:
            heartbeat.cancel()
            self._beats.pop(job.id, None)
        await self._record(claimed, key, result)
        JOB_DURATION.observe(time.perf_counter() - started)

    async def _record(self, claimed: Claimed, key: str, result: ChargeResult) -> None:
        job = claimed.job
        step = next_step(
            claimed.policy,
            job.attempt,
            result.outcome,
            first_attempt_at=claimed.first_attempt_at,
            jitter=lambda fraction: random.uniform(-fraction, fraction),  # noqa: S311
            declined_before=claimed.declined_before,
        )
        # The status read at the claim may be stale by now (a cancel or pause that landed while
        # the charge was at the PSP): the settle refuses an outcome decided on an old status
        # and returns the new one. Each round is a merchant's change, so a few always do.
        status = claimed.subscription_status
        for _ in range(_DECISIONS):
            after = after_attempt(step, status)
            settled = await self._jobs.settle(
                claimed,
                self._owner,
                outcome=result.outcome,
                decline_code=result.decline_code,
                payment_intent=result.payment_intent,
                idempotency_key=key,
                after=after,
                decided_on=status,
                recheck_after=self._leases.recheck_seconds,
            )
            if settled.recorded or settled.subscription_status in (status, None):
                break
            status = settled.subscription_status
        if not settled.recorded:
            # Lost to another worker, or the subscription kept changing: the lease lapses and
            # the attempt is re-run under its key.
            log.warning("rebill_lease_lost")
            JOBS_FAILED.labels("lease_lost").inc()
            return
        JOBS_PROCESSED.labels(result.outcome.value).inc()
        if result.outcome not in (Outcome.SUCCEEDED, Outcome.ACTION_REQUIRED):
            # A charge waiting for its customer is no failure (nor an alert): it is told to
            # the merchant as rebill.action_required.
            JOBS_FAILED.labels(result.outcome.value).inc()
        log.info(
            "rebill_attempt",
            outcome=result.outcome.value,
            decline_code=result.decline_code,
            payment_intent=result.payment_intent,
            job_status=after.job_status,
        )

    async def _beat(self, job_id: str) -> None:
        interval = self._leases.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._jobs.heartbeat(job_id, self._owner, self._leases.lease_seconds):
                    return
                self._beats[job_id] = time.monotonic()
            except Exception as error:  # noqa: BLE001 - the next beat tries again
                log.warning("rebill_heartbeat_failed", error=type(error).__name__)
