"""One contract, two delivery stores: every scenario here runs against webhook_svc's
PostgreSQL `PostgresDeliveryStore` (tests/integration/test_delivery_store_contract.py) and
its in-memory twin (tests/unit/test_delivery_store_contract.py), so unit tests of the
deliverer on the twin test what the real store does.

A scenario is `async def scenario(store, world)`: `world` makes endpoints, events and
deliveries the way the merchant's API and the intake would, and reads back what the store
wrote (a `World`)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import pytest

from webhook_svc.domain.status import Result
from webhook_svc.outbound.delivery_store import DeliveryStore, DueDelivery, Outcome
from webhook_svc.outbound.memory_delivery_store import (
    InMemoryDeliveryStore,
    StoredEndpoint,
    StoredEvent,
)

DAY = 86400.0
LEASE = 30.0


@dataclass(frozen=True)
class DeliveryRow:
    status: str
    attempts: int
    leased: bool
    last_status_code: int | None
    last_error: str | None
    delivered: bool


@dataclass(frozen=True)
class EndpointRow:
    status: str
    disabled_reason: str | None
    failing: bool


class World(Protocol):
    def endpoint(self, *, enabled: bool = True, failing_for: float | None = None) -> str: ...
    def event(self, object_id: str, sequence: int = 1) -> str: ...
    def delivery(
        self,
        event_id: str,
        endpoint_id: str,
        *,
        due_in: float = 0.0,
        status: str = "pending",
        leased_by: str | None = None,
    ) -> int: ...
    def row(self, delivery_id: int) -> DeliveryRow: ...
    def endpoint_row(self, endpoint_id: str) -> EndpointRow: ...
    def attempts(self, event_id: str) -> list[tuple[int, int | None]]: ...
    def disabled_events(self, endpoint_id: str) -> int: ...


class MemoryWorld:
    """The World of the in-memory twin."""

    def __init__(self, store: InMemoryDeliveryStore):
        self._store = store
        self._names = itertools.count(1)

    def endpoint(self, *, enabled: bool = True, failing_for: float | None = None) -> str:
        now = self._store.now()
        endpoint = StoredEndpoint(
            f"we_{next(self._names)}",
            failing_since=None if failing_for is None else now - timedelta(seconds=failing_for),
        )
        if not enabled:
            endpoint.status = "disabled"
        return self._store.add_endpoint(endpoint).id

    def event(self, object_id: str, sequence: int = 1) -> str:
        event = StoredEvent(f"evt_{next(self._names)}", object_id, sequence, self._store.now())
        return self._store.add_event(event).id

    def delivery(
        self,
        event_id: str,
        endpoint_id: str,
        *,
        due_in: float = 0.0,
        status: str = "pending",
        leased_by: str | None = None,
    ) -> int:
        due = self._store.now() + timedelta(seconds=due_in)
        return self._store.add_delivery(
            event_id, endpoint_id, next_attempt_at=due, status=status, lease_token=leased_by
        ).id

    def row(self, delivery_id: int) -> DeliveryRow:
        d = self._store.deliveries[delivery_id]
        return DeliveryRow(
            d.status,
            d.attempts,
            d.lease_token is not None,
            d.last_status_code,
            d.last_error,
            d.delivered_at is not None,
        )

    def endpoint_row(self, endpoint_id: str) -> EndpointRow:
        e = self._store.endpoints[endpoint_id]
        return EndpointRow(e.status, e.disabled_reason, e.failing_since is not None)

    def attempts(self, event_id: str) -> list[tuple[int, int | None]]:
        return [(a.attempt, a.status_code) for a in self._store.attempts if a.event_id == event_id]

    def disabled_events(self, endpoint_id: str) -> int:
        return self._store.outbox.count(("webhook_endpoint.disabled", endpoint_id))


def outcome(
    due: DueDelivery,
    kind: Result,
    *,
    next_in: float | None = None,
    status: int | None = None,
    error: str | None = None,
    leased_by: str | None = None,
) -> Outcome:
    return Outcome(
        delivery_id=due.id,
        lease_token=leased_by or due.lease_token,
        event_id=due.event_id,
        endpoint_id=due.endpoint_id,
        url=due.url,
        attempt=due.attempts + 1,
        kind=kind,
        next_in_seconds=next_in,
        status_code=status,
        duration_ms=3,
        error=error,
    )


async def claim(
    store: DeliveryStore, limit: int = 10, per_endpoint: int = 10, busy=(), lease=LEASE
):
    return await store.claim(limit, per_endpoint, list(busy), lease, uuid.uuid4().hex[:16])


def objects() -> str:
    return f"pi_{uuid.uuid4().hex[:12]}"


# --- claims ---------------------------------------------------------------------------


async def due_deliveries_of_enabled_endpoints_are_claimed_once_oldest_first(store, world):
    enabled, disabled = world.endpoint(), world.endpoint(enabled=False)
    later = world.delivery(world.event(objects()), enabled, due_in=-1)
    first = world.delivery(world.event(objects()), enabled, due_in=-5)
    world.delivery(world.event(objects()), enabled, due_in=3600)  # not due
    world.delivery(world.event(objects()), disabled)
    settled = world.delivery(world.event(objects()), enabled, status="succeeded")

    claimed = await claim(store)

    assert [d.id for d in claimed] == [first, later]
    assert all(world.row(d.id).leased for d in claimed)
    assert not world.row(settled).leased
    assert await claim(store) == []  # leased: nobody else takes them


async def a_claim_carries_what_sending_needs(store, world):
    endpoint = world.endpoint()
    event = world.event("pi_needs", sequence=7)
    world.delivery(event, endpoint)

    [due] = await claim(store)

    assert (due.event_id, due.endpoint_id, due.object_id, due.sequence) == (
        event,
        endpoint,
        "pi_needs",
        7,
    )
    assert due.attempts == 0 and due.url and due.secret and due.lease_token


async def a_lapsed_lease_is_claimed_again_under_a_new_token(store, world):
    delivery = world.delivery(world.event(objects()), world.endpoint())

    [first] = await claim(store, lease=0.2)
    assert await claim(store) == []
    await asyncio.sleep(0.5)
    [again] = await claim(store)

    assert again.id == first.id == delivery
    assert again.lease_token != first.lease_token


async def one_objects_events_go_to_an_endpoint_in_sequence(store, world):
    endpoint, other = world.endpoint(), world.endpoint()
    obj = objects()
    second = world.delivery(world.event(obj, sequence=2), endpoint, due_in=-10)
    first_event = world.event(obj, sequence=1)
    first = world.delivery(first_event, endpoint, due_in=-1)
    elsewhere = world.delivery(first_event, other, due_in=-1)  # another endpoint: alongside

    claimed = await claim(store)
    assert sorted(d.id for d in claimed) == sorted([first, elsewhere])
    [due] = [d for d in claimed if d.id == first]

    await store.record([outcome(due, Result.FAILED, next_in=0, status=500)], DAY)
    retried = await claim(store)
    assert [d.id for d in retried] == [first]  # failed, pending: the later one still waits

    await store.record([outcome(retried[0], Result.SUCCEEDED, status=200)], DAY)
    assert [d.id for d in await claim(store)] == [second]


async def a_claim_keeps_within_its_limits_and_skips_busy_endpoints(store, world):
    crowded, quiet = world.endpoint(), world.endpoint()
    for n in range(3):
        world.delivery(world.event(objects()), crowded, due_in=-10 + n)
    lone = world.delivery(world.event(objects()), quiet)

    claimed = await claim(store, limit=10, per_endpoint=2)
    assert [d.endpoint_id for d in claimed].count(crowded) == 2
    assert lone in [d.id for d in claimed]

    assert await claim(store, busy=[crowded]) == []  # the third waits for its endpoint
    assert len(await claim(store, limit=1)) == 1


# --- outcomes -------------------------------------------------------------------------


async def a_success_settles_the_delivery_and_clears_the_endpoints_failures(store, world):
    endpoint = world.endpoint(failing_for=3600)
    event = world.event(objects())
    delivery = world.delivery(event, endpoint)
    [due] = await claim(store)

    assert await store.record([outcome(due, Result.SUCCEEDED, status=204)], DAY) == []

    assert world.row(delivery) == DeliveryRow("succeeded", 1, False, 204, None, True)
    assert world.attempts(event) == [(1, 204)]
    assert world.endpoint_row(endpoint) == EndpointRow("enabled", None, False)
    assert await claim(store) == []
    assert await store.pending_count() == 0


async def a_failure_is_retried_later_and_marks_the_endpoint_failing(store, world):
    endpoint = world.endpoint()
    event = world.event(objects())
    delivery = world.delivery(event, endpoint)
    [due] = await claim(store)

    await store.record([outcome(due, Result.FAILED, next_in=60, status=500, error="http_500")], DAY)

    assert world.row(delivery) == DeliveryRow("pending", 1, False, 500, "http_500", False)
    assert world.endpoint_row(endpoint) == EndpointRow("enabled", None, True)
    assert await claim(store) == []  # not due for a minute
    assert 55 < await store.seconds_to_next_due() <= 60
    assert await store.pending_count() == 1


async def a_deferred_send_spends_no_attempt_and_keeps_the_last_error(store, world):
    endpoint = world.endpoint()
    event = world.event(objects())
    delivery = world.delivery(event, endpoint)
    [due] = await claim(store)
    await store.record([outcome(due, Result.FAILED, next_in=0, status=503, error="http_503")], DAY)
    [due] = await claim(store)

    await store.record([outcome(due, Result.DEFERRED, next_in=30)], DAY)

    assert world.row(delivery) == DeliveryRow("pending", 1, False, 503, "http_503", False)
    assert world.attempts(event) == [(1, 503)]
    assert 25 < await store.seconds_to_next_due() <= 30


async def the_last_failure_is_dead_and_lets_the_objects_next_event_go(store, world):
    endpoint = world.endpoint()
    obj = objects()
    first = world.delivery(world.event(obj, 1), endpoint, due_in=-1)
    second = world.delivery(world.event(obj, 2), endpoint)
    [due] = await claim(store)

    await store.record([outcome(due, Result.DEAD, status=500, error="http_500")], DAY)

    assert world.row(first).status == "dead"
    assert [d.id for d in await claim(store)] == [second]


async def an_outcome_under_a_lost_lease_moves_nothing(store, world):
    event = world.event(objects())
    delivery = world.delivery(event, world.endpoint())
    [due] = await claim(store)

    await store.record([outcome(due, Result.SUCCEEDED, status=200, leased_by="another")], DAY)

    assert world.row(delivery) == DeliveryRow("pending", 0, True, None, None, False)
    assert world.attempts(event) == [(1, 200)]  # the attempt was made all the same


async def a_settled_delivery_is_not_moved_again(store, world):
    """The transition table alone holds it back (its token still matches)."""
    endpoint, event = world.endpoint(), world.event(objects())
    delivered = world.delivery(event, endpoint, status="succeeded", leased_by="held")
    late = Outcome(
        delivered, "held", event, endpoint, "https://x", 2, Result.DEAD, None, 500, 3, "late"
    )

    await store.record([late], DAY)

    assert (world.row(delivered).status, world.row(delivered).attempts) == ("succeeded", 0)


# --- endpoint health ------------------------------------------------------------------


async def a_410_disables_the_endpoint_at_once_and_tells_the_merchant(store, world):
    endpoint = world.endpoint()
    delivery = world.delivery(world.event(objects()), endpoint)
    [due] = await claim(store)

    disabled = await store.record([outcome(due, Result.GONE, status=410, error="gone")], DAY)

    assert [(d.id, d.reason) for d in disabled] == [(endpoint, "gone")]
    assert world.row(delivery).status == "dead"
    assert world.endpoint_row(endpoint) == EndpointRow("disabled", "gone", True)
    assert world.disabled_events(endpoint) == 1


async def an_endpoint_failing_longer_than_the_limit_is_disabled(store, world):
    old, young = world.endpoint(failing_for=6 * DAY), world.endpoint(failing_for=4 * DAY)
    world.delivery(world.event(objects()), old)
    world.delivery(world.event(objects()), young)
    claimed = await claim(store)

    disabled = await store.record(
        [outcome(d, Result.FAILED, next_in=60, status=500, error="http_500") for d in claimed],
        5 * DAY,
    )

    assert [(d.id, d.reason) for d in disabled] == [(old, "failing")]
    assert world.endpoint_row(old) == EndpointRow("disabled", "failing", True)
    assert world.endpoint_row(young) == EndpointRow("enabled", None, True)
    assert world.disabled_events(old) == 1 and world.disabled_events(young) == 0
    assert await claim(store) == []


async def a_success_in_the_same_batch_keeps_a_failing_endpoint_enabled(store, world):
    endpoint = world.endpoint(failing_for=6 * DAY)
    world.delivery(world.event(objects()), endpoint)
    world.delivery(world.event(objects()), endpoint)
    good, bad = await claim(store)

    disabled = await store.record(
        [
            outcome(good, Result.SUCCEEDED, status=200),
            outcome(bad, Result.FAILED, next_in=60, status=500, error="http_500"),
        ],
        5 * DAY,
    )

    assert disabled == []
    assert world.endpoint_row(endpoint) == EndpointRow("enabled", None, False)


SCENARIOS = [
    due_deliveries_of_enabled_endpoints_are_claimed_once_oldest_first,
    a_claim_carries_what_sending_needs,
    a_lapsed_lease_is_claimed_again_under_a_new_token,
    one_objects_events_go_to_an_endpoint_in_sequence,
    a_claim_keeps_within_its_limits_and_skips_busy_endpoints,
    a_success_settles_the_delivery_and_clears_the_endpoints_failures,
    a_failure_is_retried_later_and_marks_the_endpoint_failing,
    a_deferred_send_spends_no_attempt_and_keeps_the_last_error,
    the_last_failure_is_dead_and_lets_the_objects_next_event_go,
    an_outcome_under_a_lost_lease_moves_nothing,
    a_settled_delivery_is_not_moved_again,
    a_410_disables_the_endpoint_at_once_and_tells_the_merchant,
    an_endpoint_failing_longer_than_the_limit_is_disabled,
    a_success_in_the_same_batch_keeps_a_failing_endpoint_enabled,
]

scenarios = pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
