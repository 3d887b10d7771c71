"""A cancel or pause that lands while a renewal is at the PSP: the renewal finishes (it was
started, it may charge), but the subscription stays canceled or paused, and no later period
is charged. The sandbox answers slowly so that the merchant's call lands mid-charge; its
ledger is the judge. This module's amounts are 14101–14103."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support.payments import post
from tests.support.rebill import advance, charges_of, get, iso, new_clock, rebills
from tests.support.rebill import subscribe as create_subscription
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# Slow, yet within the PSP timeout of the tests' gateway (1 s): the charge is answered.
SLOW_PSP = {"latency_ms": 800, "operations": ["authorize"]}


def subscribe(mesh, merchant, amount: int, clock: str) -> dict:
    created = create_subscription(mesh, merchant, amount, test_clock=clock)
    assert created.status == 200, created.body
    return created.body


def wait_for_attempt_in_flight(infra, subscription: str, attempt: int) -> None:
    """Until a worker holds the subscription's job at `attempt` (its charge is at the PSP)."""

    def running() -> bool:
        with psycopg.connect(infra.database_url) as db:
            found = db.execute(
                "SELECT 1 FROM rebill.rebill_jobs WHERE subscription_id = %s"
                " AND status = 'running' AND attempt = %s",
                (subscription, attempt),
            ).fetchone()
        return found is not None

    wait_until(running, timeout=30, interval=0.05)


def end_mid_charge(mesh, merchant, infra, knobs, clock, subscription, to, verb, attempt=1):
    """Moves the clock to `to` with a slow PSP and calls `verb` while the attempt is at the
    PSP; returns the answer once the clock has settled."""
    knobs(**SLOW_PSP)
    moved = post(mesh, merchant, f"/v1/test_clocks/{clock}/advance", {"frozen_time": iso(to)})
    assert moved.status == 200, moved.body
    wait_for_attempt_in_flight(infra, subscription["id"], attempt)
    ended = post(mesh, merchant, f"/v1/subscriptions/{subscription['id']}/{verb}")
    assert ended.status == 200, ended.body
    wait_until(  # the renewal in flight has settled
        lambda: get(mesh, merchant, f"/v1/test_clocks/{clock}").body["status"] == "ready",
        timeout=60,
        interval=0.2,
    )
    knobs(latency_ms=0)
    return ended.body


@pytest.mark.parametrize(
    ("verb", "amount", "status"), [("cancel", 14101, "canceled"), ("pause", 14102, "paused")]
)
def test_a_renewal_in_flight_does_not_undo_a_cancel_or_a_pause(
    mesh, merchant, infra, knobs, verb, amount, status
):
    start = datetime(2028, 3, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    subscription = subscribe(mesh, merchant, amount, clock)
    assert len(charges_of(mesh, amount)) == 1

    ended = end_mid_charge(
        mesh, merchant, infra, knobs, clock, subscription, start + timedelta(days=32), verb
    )
    assert ended["status"] == status

    after = get(mesh, merchant, f"/v1/subscriptions/{subscription['id']}").body
    assert after["status"] == status
    # The renewal in flight was started before the call: it finished and charged.
    assert len(charges_of(mesh, amount)) == 2
    advance(mesh, merchant, clock, start + timedelta(days=130))
    assert get(mesh, merchant, f"/v1/subscriptions/{subscription['id']}").body["status"] == status
    assert len(charges_of(mesh, amount)) == 2  # nothing after the cancel or the pause


def test_a_dunning_retry_in_flight_does_not_undo_a_cancel(mesh, merchant, infra, knobs):
    amount = 14103
    start = datetime(2028, 4, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    knobs(soft_declines={str(amount): 2})  # the first charge and its first retry are declined
    subscription = subscribe(mesh, merchant, amount, clock)
    assert subscription["status"] == "past_due"

    ended = end_mid_charge(
        mesh,
        merchant,
        infra,
        knobs,
        clock,
        subscription,
        start + timedelta(hours=36),
        "cancel",
        attempt=2,
    )
    assert ended["status"] == "canceled"

    advance(mesh, merchant, clock, start + timedelta(days=70))
    after = get(mesh, merchant, f"/v1/subscriptions/{subscription['id']}").body
    assert after["status"] == "canceled"
    attempts = sorted((a["attempt"], a["outcome"]) for a in rebills(mesh, merchant, after["id"]))
    assert attempts == [(1, "declined_soft"), (2, "declined_soft")]
    assert charges_of(mesh, amount) == []
