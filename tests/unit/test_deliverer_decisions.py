"""The deliverer's decisions, on the in-memory delivery store (which keeps the same contract
as PostgreSQL's): what an answer comes to, the retry schedule, the circuit breaker, and when
an endpoint is given up."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from webhook_svc.domain.endpoint_health import DisabledReason, disabled_reason
from webhook_svc.domain.outcome import Answer, classify
from webhook_svc.domain.rules import JITTER
from webhook_svc.domain.status import (
    TRANSITIONS,
    Action,
    DeliveryStatus,
    Result,
    move,
    sendable,
)
from webhook_svc.outbound import signing
from webhook_svc.outbound.deliverer import Deliverer, DeliveryPolicy
from webhook_svc.outbound.memory_delivery_store import (
    InMemoryDeliveryStore,
    StoredEndpoint,
    StoredEvent,
)

SCHEDULE = (0, 5, 300, 1800)
DAY = 86400.0

# --- classify: an answer alone decides ------------------------------------------------


def test_a_2xx_succeeded_and_a_410_is_gone_whatever_the_attempt():
    assert classify(Answer(204), 1, SCHEDULE, 60).result == Result.SUCCEEDED
    assert classify(Answer(200), len(SCHEDULE), SCHEDULE, 60).result == Result.SUCCEEDED
    gone = classify(Answer(410), len(SCHEDULE), SCHEDULE, 60)
    assert (gone.result, gone.next_in_seconds, gone.error) == (Result.GONE, None, "gone")


@pytest.mark.parametrize("attempt", range(1, len(SCHEDULE)))
def test_a_failure_waits_the_schedules_next_gap_jittered(attempt):
    decision = classify(Answer(500), attempt, SCHEDULE, 60, random.Random(attempt))
    planned = SCHEDULE[attempt]
    assert decision.result == Result.FAILED and decision.error == "http_500"
    assert planned * (1 - JITTER) <= decision.next_in_seconds <= planned * (1 + JITTER)


def test_the_last_attempts_failure_is_dead():
    dead = classify(Answer(None, error="timeout"), len(SCHEDULE), SCHEDULE, 60)
    assert (dead.result, dead.next_in_seconds, dead.error) == (Result.DEAD, None, "timeout")


def test_retry_after_on_429_or_503_lengthens_the_wait_up_to_its_cap():
    rng = random.Random(1)
    assert classify(Answer(429, retry_after=120), 1, SCHEDULE, 600, rng).next_in_seconds == 120
    assert classify(Answer(503, retry_after=9999), 1, SCHEDULE, 600, rng).next_in_seconds == 600
    # Never shorter than the schedule's, and only on 429 and 503.
    assert classify(Answer(429, retry_after=0), 2, SCHEDULE, 600, rng).next_in_seconds >= 270
    assert classify(Answer(500, retry_after=120), 1, SCHEDULE, 600, rng).next_in_seconds < 6


# --- the status table -----------------------------------------------------------------


def test_only_a_pending_delivery_is_sent_and_only_a_redelivery_reopens_a_settled_one():
    assert sendable() == (DeliveryStatus.PENDING,)
    for result in Result:
        assert move(DeliveryStatus.SUCCEEDED, result) is None
        assert move(DeliveryStatus.DEAD, result) is None
    assert move(DeliveryStatus.DEAD, Action.REDELIVER) == DeliveryStatus.PENDING
    assert TRANSITIONS[Result.GONE] == {DeliveryStatus.PENDING: DeliveryStatus.DEAD}


def test_an_endpoint_is_given_up_on_410_or_after_failing_for_the_limit():
    now, limit = datetime(2026, 1, 10, tzinfo=UTC), timedelta(days=5)
    six_days = now - timedelta(days=6)
    assert disabled_reason(gone=True, failing_since=None, now=now, disable_after=limit) == "gone"
    assert (
        disabled_reason(gone=False, failing_since=six_days, now=now, disable_after=limit)
        == DisabledReason.FAILING
    )
    four_days = now - timedelta(days=4)
    assert (
        disabled_reason(gone=False, failing_since=four_days, now=now, disable_after=limit) is None
    )
    assert disabled_reason(gone=False, failing_since=None, now=now, disable_after=limit) is None


# --- the deliverer on the twin --------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = datetime(2026, 1, 10, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Endpoint:
    """Answers each POST with the next of `statuses` (the last one from then on)."""

    def __init__(self, *statuses: int):
        self._statuses = list(statuses)
        self.posts: list[tuple[str, dict]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        self.posts.append((url, headers))
        status = self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]
        return Answer(status)


def world(endpoint: Endpoint, *, failing_for: float | None = None, **policy):
    clock = Clock()
    store = InMemoryDeliveryStore(clock=lambda: clock.now)
    since = None if failing_for is None else clock.now - timedelta(seconds=failing_for)
    store.add_endpoint(StoredEndpoint("we_1", failing_since=since))
    store.add_event(StoredEvent("evt_1", "pi_1", 1, clock.now))
    delivery = store.add_delivery("evt_1", "we_1")
    secret = signing.new_secret("v1")
    deliverer = Deliverer(
        store,
        endpoint.post,
        lambda _due: [secret],
        DeliveryPolicy(schedule=SCHEDULE, **policy),
    )
    return clock, store, deliverer, delivery.id


async def round_of(deliverer: Deliverer) -> list:
    """One claim, its sends, their outcomes recorded (the loop's work, without the loop)."""
    outcomes = [await deliverer.attempt(due) for due in await deliverer.claim(10)]
    await deliverer.record(outcomes)
    return outcomes


def test_a_failing_delivery_follows_the_schedule_then_is_dead():
    async def main():
        endpoint = Endpoint(500)
        clock, store, deliverer, delivery = world(endpoint, breaker_fail_max=100)
        waits = []
        while (await round_of(deliverer))[-1].kind == Result.FAILED:
            wait = await store.seconds_to_next_due()
            assert await round_of(deliverer) == [] or wait == 0  # nothing before it is due
            waits.append(wait)
            clock.advance(wait)
        return store, endpoint, waits, delivery

    store, endpoint, waits, delivery = asyncio.run(main())
    assert len(endpoint.posts) == len(SCHEDULE)
    assert len({headers["webhook-id"] for _, headers in endpoint.posts}) == 1
    for wait, planned in zip(waits, SCHEDULE[1:], strict=True):
        assert planned * (1 - JITTER) <= wait <= planned * (1 + JITTER)
    stored = store.deliveries[delivery]
    assert (stored.status, stored.attempts, stored.last_error) == ("dead", 4, "http_500")
    assert [a.attempt for a in store.attempts] == [1, 2, 3, 4]


def test_an_open_circuit_defers_without_spending_an_attempt():
    async def main():
        endpoint = Endpoint(500)
        clock, store, deliverer, delivery = world(
            endpoint, breaker_fail_max=2, breaker_reset_seconds=30
        )
        kinds = []
        for _ in range(3):
            [outcome] = await round_of(deliverer)
            kinds.append(outcome.kind)
            clock.advance(await store.seconds_to_next_due())
        return store, endpoint, kinds, delivery, outcome

    store, endpoint, kinds, delivery, deferred = asyncio.run(main())
    assert kinds == [Result.FAILED, Result.FAILED, Result.DEFERRED]
    assert len(endpoint.posts) == 2  # the open circuit sent nothing
    assert deferred.next_in_seconds == 30
    assert store.deliveries[delivery].attempts == 2
    assert len(store.attempts) == 2


def test_a_success_delivers_once_and_heals_the_endpoint():
    async def main():
        endpoint = Endpoint(200)
        _, store, deliverer, delivery = world(endpoint, failing_for=DAY)
        await round_of(deliverer)
        again = await round_of(deliverer)
        return store, endpoint, delivery, again

    store, endpoint, delivery, again = asyncio.run(main())
    assert again == [] and len(endpoint.posts) == 1
    assert store.deliveries[delivery].status == "succeeded"
    assert store.endpoints["we_1"].failing_since is None


@pytest.mark.parametrize(
    ("statuses", "failing_for", "reason"),
    [((410,), None, "gone"), ((500,), 6 * DAY, "failing"), ((500,), 4 * DAY, None)],
)
def test_the_deliverer_disables_an_endpoint_gone_or_failing_for_five_days(
    statuses, failing_for, reason
):
    async def main():
        _, store, deliverer, _ = world(
            Endpoint(*statuses), failing_for=failing_for, disable_after_seconds=5 * DAY
        )
        await round_of(deliverer)
        return store

    store = asyncio.run(main())
    endpoint = store.endpoints["we_1"]
    assert endpoint.disabled_reason == reason
    assert endpoint.status == ("enabled" if reason is None else "disabled")
    assert store.outbox == ([] if reason is None else [("webhook_endpoint.disabled", "we_1")])
