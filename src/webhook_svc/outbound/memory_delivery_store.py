"""The delivery store in memory: the same rules as PostgresDeliveryStore (the contract suite
runs against both), for unit tests of the deliverer's decisions without a database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count

from webhook_svc.domain.endpoint_health import DisabledReason, EndpointStatus, disabled_reason
from webhook_svc.domain.status import UNSENT, DeliveryStatus, Result, move, sendable
from webhook_svc.outbound.delivery_store import DisabledEndpoint, DueDelivery, Outcome


@dataclass
class StoredEndpoint:
    id: str
    merchant_id: str = "acct_memory"
    livemode: bool = False
    url: str = "https://example.com/hook"
    status: EndpointStatus = EndpointStatus.ENABLED
    secret: str = "sealed"  # noqa: S105 - the store keeps it sealed; this is a stand-in
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    failing_since: datetime | None = None
    disabled_reason: DisabledReason | None = None


@dataclass
class StoredEvent:
    id: str
    object_id: str
    sequence: int
    created_at: datetime
    merchant_id: str = "acct_memory"
    livemode: bool = False
    type: str = "payment_intent.succeeded"
    object_type: str = "payment_intent"
    object: dict = field(default_factory=dict)
    traceparent: str | None = None


@dataclass
class StoredDelivery:
    id: int
    event_id: str
    endpoint_id: str
    next_attempt_at: datetime
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    leased_until: datetime | None = None
    lease_token: str | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True)
class StoredAttempt:
    event_id: str
    endpoint_id: str
    attempt: int
    status_code: int | None
    error: str | None


class InMemoryDeliveryStore:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.now = clock
        self.endpoints: dict[str, StoredEndpoint] = {}
        self.events: dict[str, StoredEvent] = {}
        self.deliveries: dict[int, StoredDelivery] = {}
        self.attempts: list[StoredAttempt] = []
        self.outbox: list[tuple[str, str]] = []  # (event type, endpoint id)
        self._ids = count(1)

    # --- what the merchant's API and the intake write in PostgreSQL ----------------------

    def add_endpoint(self, endpoint: StoredEndpoint) -> StoredEndpoint:
        self.endpoints[endpoint.id] = endpoint
        return endpoint

    def add_event(self, event: StoredEvent) -> StoredEvent:
        self.events[event.id] = event
        return event

    def add_delivery(self, event_id: str, endpoint_id: str, **fields) -> StoredDelivery:
        fields.setdefault("next_attempt_at", self.now())
        delivery = StoredDelivery(next(self._ids), event_id, endpoint_id, **fields)
        self.deliveries[delivery.id] = delivery
        return delivery

    # --- the DeliveryStore protocol -------------------------------------------------------

    async def claim(
        self, limit: int, per_endpoint: int, busy: Sequence[str], lease_seconds: float, token: str
    ) -> list[DueDelivery]:
        now = self.now()
        candidates = sorted(
            (
                d
                for d in self.deliveries.values()
                if d.status in sendable()
                and d.next_attempt_at <= now
                and (d.leased_until is None or d.leased_until < now)
                and self.endpoints[d.endpoint_id].status == EndpointStatus.ENABLED
                and d.endpoint_id not in busy
                and not self._waits_for_an_earlier_one(d)
            ),
            key=lambda d: (d.next_attempt_at, d.id),
        )[: 4 * limit]
        taken: Counter[str] = Counter()
        claimed = []
        for delivery in candidates:
            taken[delivery.endpoint_id] += 1
            if taken[delivery.endpoint_id] <= per_endpoint and len(claimed) < limit:
                delivery.leased_until = now + timedelta(seconds=lease_seconds)
                delivery.lease_token = token
                claimed.append(self._due(delivery, now))
        return sorted(claimed, key=lambda d: (d.next_attempt_at, d.sequence, d.id))

    async def record(
        self, outcomes: Sequence[Outcome], disable_after_seconds: float
    ) -> list[DisabledEndpoint]:
        now = self.now()
        for outcome in outcomes:
            delivery = self.deliveries.get(outcome.delivery_id)
            if delivery is None or delivery.lease_token != outcome.lease_token:
                continue
            target = move(delivery.status, outcome.kind)
            if target is None:
                continue
            sent = outcome.kind not in UNSENT
            delivery.status = target
            delivery.attempts += 1 if sent else 0
            if outcome.next_in_seconds is not None:
                delivery.next_attempt_at = now + timedelta(seconds=outcome.next_in_seconds)
            if outcome.kind == Result.SUCCEEDED:
                delivery.delivered_at = now
            if outcome.status_code is not None:
                delivery.last_status_code = outcome.status_code
            if sent:
                delivery.last_error = outcome.error
            delivery.leased_until = delivery.lease_token = None
        self.attempts += [
            StoredAttempt(o.event_id, o.endpoint_id, o.attempt, o.status_code, o.error)
            for o in outcomes
            if o.kind not in UNSENT
        ]
        healthy = {o.endpoint_id for o in outcomes if o.kind == Result.SUCCEEDED}
        for endpoint_id in healthy:
            self.endpoints[endpoint_id].failing_since = None
        gone: dict[str, bool] = {}
        for o in outcomes:
            if o.kind in (Result.FAILED, Result.DEAD, Result.GONE) and o.endpoint_id not in healthy:
                gone[o.endpoint_id] = gone.get(o.endpoint_id, False) or o.kind == Result.GONE
        disabled = []
        for endpoint_id, was_gone in gone.items():
            endpoint = self.endpoints[endpoint_id]
            if endpoint.status != EndpointStatus.ENABLED:
                continue
            reason = disabled_reason(
                gone=was_gone,
                failing_since=endpoint.failing_since,
                now=now,
                disable_after=timedelta(seconds=disable_after_seconds),
            )
            endpoint.failing_since = endpoint.failing_since or now
            if reason is not None:
                endpoint.status = EndpointStatus.DISABLED
                endpoint.disabled_reason = reason
                self.outbox.append(("webhook_endpoint.disabled", endpoint_id))
                disabled.append(DisabledEndpoint(endpoint_id, reason))
        return disabled

    async def seconds_to_next_due(self) -> float | None:
        now = self.now()
        later = [
            d.next_attempt_at
            for d in self.deliveries.values()
            if d.status in sendable() and d.next_attempt_at > now
        ]
        return (min(later) - now).total_seconds() if later else None

    async def pending_count(self) -> int:
        return sum(d.status in sendable() for d in self.deliveries.values())

    # ---------------------------------------------------------------------------------------

    def _waits_for_an_earlier_one(self, delivery: StoredDelivery) -> bool:
        """An earlier event of its object to its endpoint is still pending."""
        event = self.events[delivery.event_id]

        def order(e: StoredEvent):
            return (e.sequence, e.created_at, e.id)

        return any(
            other.endpoint_id == delivery.endpoint_id
            and other.status in sendable()
            and (earlier := self.events[other.event_id]).object_id == event.object_id
            and earlier.object_type == event.object_type
            and earlier.merchant_id == event.merchant_id
            and earlier.livemode == event.livemode
            and order(earlier) < order(event)
            for other in self.deliveries.values()
        )

    def _due(self, delivery: StoredDelivery, now: datetime) -> DueDelivery:
        event, endpoint = self.events[delivery.event_id], self.endpoints[delivery.endpoint_id]
        assert delivery.lease_token is not None
        return DueDelivery(
            id=delivery.id,
            attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at,
            lease_token=delivery.lease_token,
            event_id=event.id,
            type=event.type,
            created_at=event.created_at,
            object=dict(event.object),
            sequence=event.sequence,
            object_id=event.object_id,
            merchant_id=event.merchant_id,
            traceparent=event.traceparent,
            endpoint_id=endpoint.id,
            url=endpoint.url,
            secret=endpoint.secret,
            previous_secret=endpoint.previous_secret,
            previous_secret_expires_at=endpoint.previous_secret_expires_at,
            now=now,
        )
