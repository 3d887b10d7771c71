"""Sends due deliveries to merchants' endpoints. Any number of replicas share the work: a
delivery is leased in the statement that claims it (SKIP LOCKED), so one event is never sent
to one endpoint twice at the same time; a replica that dies mid-send leaves a lease that
lapses, and the delivery is sent again with the same `webhook-id` (at least once).

One object's events go to one endpoint in sequence order: the claim takes none while an
earlier one of its object to that endpoint is pending (being sent, or waiting for a retry).

A replica keeps up to `max_in_flight` sends going, at most `per_endpoint` to one endpoint,
started in the order they fell due; each endpoint has its own circuit breaker and every send
its timeout, so one dead endpoint cannot slow the others. Outcomes are written in batches:
the delivery's next step, the attempt's record, and the endpoint's failure tracking."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pybreaker
import structlog

from paymesh.platform.tracing import annotate, annotate_object, continued_span, record_failure
from paymesh.platform.wire import json_timestamp
from webhook_svc.domain.outcome import Answer, Decision, classify, deferred
from webhook_svc.domain.status import SETTLED, UNSENT, Result
from webhook_svc.outbound import signing
from webhook_svc.outbound.delivery_store import DeliveryStore, DueDelivery, Outcome
from webhook_svc.outbound.gates import Gates
from webhook_svc.outbound.metrics import (
    CIRCUIT_STATE,
    DEAD_LETTERS,
    DELIVERIES,
    DELIVERY_DURATION,
    DELIVERY_LAG,
    PENDING,
)

log = structlog.get_logger(__name__)

_CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}
MAX_CLAIM = 500


@dataclass(frozen=True)
class DeliveryPolicy:
    schedule: Sequence[float]
    timeout_seconds: float = 10.0
    max_in_flight: int = 200
    per_endpoint: int = 8
    breaker_fail_max: int = 5
    breaker_reset_seconds: float = 30.0
    retry_after_max_seconds: float = 86400.0
    disable_after_seconds: float = 5 * 86400.0
    idle_seconds: float = 1.0


class _Breaker(pybreaker.CircuitBreakerListener):
    def state_change(self, breaker, old, new):
        CIRCUIT_STATE.labels(breaker.name).set(_CIRCUIT_STATES[new.name])
        log.warning("webhook_circuit_changed", endpoint=breaker.name, state=new.name)


class _EndpointFailed(Exception):
    pass


class Deliverer:
    def __init__(
        self,
        store: DeliveryStore,
        post: Callable[[str, bytes, dict[str, str]], Awaitable[Answer]],
        signing_secrets: Callable[[DueDelivery], list[str]],
        policy: DeliveryPolicy,
    ):
        self._store = store
        self._post = post
        self._signing_secrets = signing_secrets
        self._policy = policy
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._per_endpoint = Gates(policy.per_endpoint)
        self._per_object = Gates(1)
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        # A replica that died holding a delivery is replaced this long after it took it. A
        # send starts only while its whole timeout fits in what is left of the lease, so a
        # delivery is never sent by two at once (one that waited too long behind its endpoint's
        # others goes back, unsent, to be claimed again).
        self._lease_seconds = 2 * policy.timeout_seconds + 5

    async def run(self, wakes: Callable[[Callable[..., None]], Awaitable[None]]) -> None:
        """Delivers until cancelled; `wakes(woken)` calls `woken` whenever deliveries fell due."""
        tasks = [
            asyncio.create_task(wakes(self.woken)),
            asyncio.create_task(self._record_forever()),
            asyncio.create_task(self._count_pending_forever()),
        ]
        try:
            await self._claim_forever()
        finally:
            for task in tasks:
                task.cancel()
            await self.flush()  # outcomes of finished sends are not thrown away

    def woken(self, *_args) -> None:
        self._wake.set()

    async def _claim_forever(self) -> None:
        while True:
            # Cleared before claiming: a send that ends or a delivery that arrives while the
            # claim runs wakes the next wait at once.
            self._wake.clear()
            room = self._policy.max_in_flight - self._in_flight
            claimed: list[DueDelivery] = []
            if room > 0:
                try:
                    claimed = await self.claim(room)
                except Exception as error:  # noqa: BLE001 - the database comes back
                    log.warning("webhook_claim_failed", error=type(error).__name__)
                    await asyncio.sleep(1.0)
                    continue
            lease_ends = time.monotonic() + self._lease_seconds - 1.0  # 1 s for clock skew
            for due in claimed:
                self._in_flight += 1
                asyncio.create_task(self._deliver(due, lease_ends))
            if len(claimed) < room:
                wait = await self._until_next_due() if not claimed else self._policy.idle_seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                await asyncio.sleep(0.002)  # sends ending together share the next claim
            elif room <= 0:
                await asyncio.sleep(0.01)

    async def _until_next_due(self) -> float:
        """Seconds until the next retry falls due (new deliveries wake the loop at once)."""
        try:
            wait = await self._store.seconds_to_next_due()
        except Exception:  # noqa: BLE001 - the claim that follows says what is wrong
            return self._policy.idle_seconds
        if wait is None:
            return self._policy.idle_seconds
        return min(self._policy.idle_seconds, max(0.02, wait))

    async def claim(self, room: int) -> list[DueDelivery]:
        """Leases up to `room` due deliveries to this replica."""
        return await self._store.claim(
            limit=min(room, MAX_CLAIM),
            per_endpoint=self._policy.per_endpoint * 2,
            busy=self._per_endpoint.busy(2 * self._policy.per_endpoint),
            lease_seconds=self._lease_seconds,
            token=secrets.token_hex(8),
        )

    async def _deliver(self, due: DueDelivery, lease_ends: float) -> None:
        # In the trace of the change that made the event; the HTTP client span below it sends
        # its traceparent to the merchant.
        attributes = {
            "tenant": due.merchant_id,
            "webhook.event.id": due.event_id,
            "webhook.event.type": due.type,
            "webhook.endpoint.id": due.endpoint_id,
            "webhook.attempt": due.attempts + 1,
        }
        with continued_span("webhook.deliver", due.traceparent, attributes):
            annotate_object(due.object_id)
            await self._deliver_in_span(due, lease_ends)

    async def _deliver_in_span(self, due: DueDelivery, lease_ends: float) -> None:
        try:
            # One object's events reach one endpoint one after the other, in the order they
            # fell due; other objects' go alongside, up to the endpoint's limit.
            async with (
                self._per_object.held((due.endpoint_id, due.object_id)),
                self._per_endpoint.held(due.endpoint_id),
            ):
                if time.monotonic() + self._policy.timeout_seconds > lease_ends:
                    outcome = _outcome(due, deferred(0), None, 0)
                else:
                    outcome = await self.attempt(due)
        except Exception:  # noqa: BLE001 - the lease lapses and another round sends it
            log.exception("webhook_delivery_crashed", event_id=due.event_id)
            return
        finally:
            self._in_flight -= 1
            if self._per_endpoint.users(due.endpoint_id) <= self._policy.per_endpoint:
                self._wake.set()  # this endpoint's queue is half empty: claim its next ones
        _observe(outcome, due)
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    async def attempt(self, due: DueDelivery) -> Outcome:
        """Sends the delivery once, through its endpoint's circuit breaker, and says what it
        came to (an open circuit sends nothing: deferred until it half-opens)."""
        attempt = due.attempts + 1
        breaker = self._breaker(due.endpoint_id)
        body = _body(due)
        headers = signing.headers(self._signing_secrets(due), due.event_id, int(time.time()), body)
        started = time.monotonic()
        answer: Answer | None = None
        try:
            with breaker.calling():
                answer = await self._post(due.url, body, headers)
                if answer.status is None or not 200 <= answer.status < 300:
                    raise _EndpointFailed
        except pybreaker.CircuitBreakerError:
            if answer is None:  # open: nothing was sent
                return _outcome(due, deferred(breaker.reset_timeout), None, 0)
        except _EndpointFailed:
            pass
        assert answer is not None
        elapsed = time.monotonic() - started
        DELIVERY_DURATION.observe(elapsed)
        decision = classify(
            answer, attempt, self._policy.schedule, self._policy.retry_after_max_seconds
        )
        return _outcome(due, decision, answer.status, int(elapsed * 1000))

    def _breaker(self, endpoint_id: str) -> pybreaker.CircuitBreaker:
        breaker = self._breakers.get(endpoint_id)
        if breaker is None:
            breaker = pybreaker.CircuitBreaker(
                fail_max=self._policy.breaker_fail_max,
                reset_timeout=self._policy.breaker_reset_seconds,
                listeners=[_Breaker()],
                name=endpoint_id,
            )
            self._breakers[endpoint_id] = breaker
        return breaker

    async def _record_forever(self) -> None:
        while True:
            await self._outcome_ready.wait()
            await asyncio.sleep(0.005)  # outcomes finishing together share a transaction
            await self.flush()

    async def flush(self) -> None:
        """Records the outcomes of finished sends, in batches."""
        while self._outcomes:
            self._outcome_ready.clear()
            batch, self._outcomes = self._outcomes[:500], self._outcomes[500:]
            try:
                await self.record(batch)
            except Exception as error:  # noqa: BLE001 - the leases lapse: sent again later
                log.warning("webhook_record_failed", error=type(error).__name__, count=len(batch))
                await asyncio.sleep(1.0)
                continue
            if any(o.kind in SETTLED for o in batch):
                self._wake.set()  # the objects' next events may be claimed now

    async def record(self, batch: Sequence[Outcome]) -> None:
        disabled = await self._store.record(batch, self._policy.disable_after_seconds)
        for endpoint in disabled:
            log.warning("webhook_endpoint_disabled", endpoint=endpoint.id, reason=endpoint.reason)

    async def _count_pending_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a gauge: the next round tries again
                PENDING.set(await self._store.pending_count())
            await asyncio.sleep(5.0)


class _EndpointFailed(Exception):
    pass


def _outcome(due: DueDelivery, decision: Decision, status: int | None, duration_ms: int) -> Outcome:
    return Outcome(
        delivery_id=due.id,
        lease_token=due.lease_token,
        event_id=due.event_id,
        endpoint_id=due.endpoint_id,
        url=due.url,
        attempt=due.attempts + 1,
        kind=decision.result,
        next_in_seconds=decision.next_in_seconds,
        status_code=status,
        duration_ms=duration_ms,
        error=decision.error,
    )


def _observe(outcome: Outcome, due: DueDelivery) -> None:
    """The outcome's metrics and its log line."""
    DELIVERIES.labels(outcome.kind).inc()
    _log_outcome(outcome)
    if outcome.kind in (Result.DEAD, Result.GONE):
        DEAD_LETTERS.inc()
    if outcome.kind == Result.SUCCEEDED:
        DELIVERY_LAG.observe(max(0.0, time.time() - due.created_at.timestamp()))


def _log_outcome(outcome: Outcome) -> None:
    """One line per delivery, in its trace; a failed one marks the span failed."""
    fields = {
        "outcome": outcome.kind,
        "event_id": outcome.event_id,
        "endpoint": outcome.endpoint_id,
        "attempt": outcome.attempt,
        "status_code": outcome.status_code,
        "duration_ms": outcome.duration_ms,
    }
    annotate(**{"webhook.outcome": outcome.kind, "http.response.status_code": outcome.status_code})
    if outcome.kind in (Result.SUCCEEDED, *UNSENT):
        log.info("webhook_delivery", **fields)
        return
    record_failure(outcome.error or outcome.kind)
    log.warning("webhook_delivery", **fields, error=outcome.error, retry_in=outcome.next_in_seconds)


def _body(row) -> bytes:
    """The delivery's JSON: the same bytes for every attempt of one event. `created` is
    written as GET /v1/events/{id} and every object write theirs."""
    return json.dumps(
        {
            "id": row.event_id,
            "type": row.type,
            "created": json_timestamp(row.created_at),
            "data": {"object": row.object},
            "sequence": row.sequence,
        },
        separators=(",", ":"),
    ).encode()


def _body(due: DueDelivery) -> bytes:
    """The delivery's JSON: the same bytes for every attempt of one event. `created` is
    written as GET /v1/events/{id} and every object write theirs."""
    return json.dumps(
        {
            "id": due.event_id,
            "type": due.type,
            "created": json_timestamp(due.created_at),
            "data": {"object": due.object},
            "sequence": due.sequence,
        },
        separators=(",", ":"),
    ).encode()
