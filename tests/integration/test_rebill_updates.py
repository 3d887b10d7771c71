"""A subscription saved with a new card, amount or metadata through Envoy
(`POST /v1/subscriptions/{id}`): a past_due or unpaid one is charged for its open period at
once, as a new attempt of that period under its own key, and renews normally after; the
sandbox PSP's ledger is the judge of what was charged. This module's amounts are
14201–14240."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support import cards
from tests.support.envelope import reason_of, violations
from tests.support.payments import post
from tests.support.psp import close_sandbox_breaker
from tests.support.rebill import advance, charges_of, get, iso, new_clock, rebills, subscribe
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SOFT_DECLINE = "4000000000009995"


def update(mesh, merchant, subscription: str, body: dict, key: str | None = None):
    return post(mesh, merchant, f"/v1/subscriptions/{subscription}", body, key=key)


def unpaid(mesh, merchant, amount: int, clock: str | None = None, **fields) -> dict:
    """A subscription whose first charge was declined hard: dunning gave up at once."""
    extra = {"test_clock": clock} if clock else {}
    created = subscribe(mesh, merchant, amount, number=cards.VISA_DECLINE, **extra, **fields)
    assert created.status == 200, created.body
    assert created.body["status"] == "unpaid"
    return created.body


def new_card(mesh, merchant, number: str = cards.VISA) -> str:
    return tokenize(mesh, merchant, number).body["id"]


def recorded(infra, subscription: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The subscription's audit actions and its events (type, status) in the order written."""
    with psycopg.connect(infra.database_url) as db:
        actions = [
            row[0]
            for row in db.execute(
                "SELECT action FROM rebill.rebill_audit WHERE object_id = %s"
                " OR object_id IN (SELECT id FROM rebill.rebill_jobs WHERE subscription_id = %s)"
                " ORDER BY id",
                (subscription, subscription),
            )
        ]
        events = [
            (row[0], row[1])
            for row in db.execute(
                "SELECT event_type, payload->'snapshot'->>'status' FROM rebill.outbox"
                " WHERE (aggregate_id = %s OR payload->'snapshot'->>'subscription_id' = %s)"
                " AND event_type NOT LIKE 'rebill_job.%%' ORDER BY id",
                (subscription, subscription),
            )
        ]
    return actions, events


def test_an_unpaid_subscription_given_a_new_card_pays_its_open_period_once_and_renews(
    mesh, merchant, infra
):
    start = datetime(2028, 5, 10, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    subscription = unpaid(mesh, merchant, 14201, clock, metadata={"plan": "pro"})
    card = new_card(mesh, merchant)
    _, events_before = recorded(infra, subscription["id"])

    body = {"payment_method": card, "amount": 14202, "metadata": {"seats": "5", "plan": ""}}
    rescued = update(mesh, merchant, subscription["id"], body, key="rescue-14201")

    assert rescued.status == 200, rescued.body
    assert rescued.body["status"] == "active"
    assert rescued.body["payment_method"] == card
    assert rescued.body["amount"] == "14202"
    assert rescued.body["metadata"] == {"seats": "5"}  # "plan": "" removed it
    assert "next_attempt_at" not in rescued.body
    # The open period is charged once, at the amount it was billed at; the new amount waits
    # for the next period.
    assert len(charges_of(mesh, 14201)) == 1
    assert charges_of(mesh, 14202) == []
    attempts = sorted(
        (a["attempt"], a["outcome"]) for a in rebills(mesh, merchant, rescued.body["id"])
    )
    assert attempts == [(1, "declined_hard"), (2, "succeeded")]
    actions, events = recorded(infra, subscription["id"])
    assert "subscription.update" in actions
    assert actions[-1] == "subscription.status"  # the paid attempt's: active again
    new_events = events[len(events_before) :]
    assert new_events[0] == ("subscription.updated", "past_due")  # the card, retried now
    assert ("rebill.succeeded", "succeeded") in new_events
    assert new_events[-1] == ("subscription.updated", "active")

    again = update(mesh, merchant, subscription["id"], body, key="rescue-14201")
    assert again.status == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body == rescued.body
    other = update(
        mesh, merchant, subscription["id"], {**body, "amount": 14203}, key="rescue-14201"
    )
    assert (other.status, reason_of(other)) == (409, "idempotency_key_reused")
    assert len(charges_of(mesh, 14201)) == 1

    # The next period renews on its own date, with the new card and the new amount; dunning
    # starts afresh there (its first attempt is attempt 1).
    advance(mesh, merchant, clock, start + timedelta(days=31, hours=1))
    assert len(charges_of(mesh, 14201)) == 1
    assert len(charges_of(mesh, 14202)) == 1
    renewed = get(mesh, merchant, f"/v1/subscriptions/{subscription['id']}").body
    assert (renewed["status"], renewed["current_period_start"]) == (
        "active",
        "2028-06-10T00:00:00Z",
    )
    newest = rebills(mesh, merchant, subscription["id"])[0]
    assert (newest["amount"], newest["attempt"], newest["outcome"]) == ("14202", 1, "succeeded")


def test_a_past_due_subscription_given_a_new_card_is_charged_now_not_at_its_next_retry(
    mesh, merchant, infra
):
    start = datetime(2028, 6, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    created = subscribe(mesh, merchant, 14204, number=SOFT_DECLINE, test_clock=clock)
    assert created.body["status"] == "past_due", created.body
    assert created.body["next_attempt_at"]

    rescued = update(
        mesh, merchant, created.body["id"], {"payment_method": new_card(mesh, merchant)}
    )

    assert rescued.status == 200, rescued.body
    assert rescued.body["status"] == "active"
    assert "next_attempt_at" not in rescued.body
    assert len(charges_of(mesh, 14204)) == 1
    # The retry that was due next (attempt 2) ran now, with the new card, under its own key.
    with psycopg.connect(infra.database_url) as db:
        keys = db.execute(
            "SELECT attempt, outcome, idempotency_key FROM rebill.rebill_attempts"
            " WHERE subscription_id = %s ORDER BY attempt",
            (created.body["id"],),
        ).fetchall()
    period = "2028-06-01T00:00:00+00:00"
    assert keys == [
        (1, "declined_soft", f"rebill:{created.body['id']}:{period}:1"),
        (2, "succeeded", f"rebill:{created.body['id']}:{period}:2"),
    ]
    # Past the retry the declined card had been given: nothing more for this period.
    advance(mesh, merchant, clock, start + timedelta(days=9))
    assert len(charges_of(mesh, 14204)) == 1
    advance(mesh, merchant, clock, start + timedelta(days=30, hours=1))
    assert len(charges_of(mesh, 14204)) == 2
    assert get(mesh, merchant, f"/v1/subscriptions/{created.body['id']}").body["status"] == "active"


def test_a_new_card_that_is_declined_too_leaves_the_subscription_unpaid(mesh, merchant):
    subscription = unpaid(mesh, merchant, 14205)

    again = update(
        mesh,
        merchant,
        subscription["id"],
        {"payment_method": new_card(mesh, merchant, cards.VISA_DECLINE)},
    )

    assert again.status == 200, again.body
    assert again.body["status"] == "unpaid"
    attempts = sorted(
        (a["attempt"], a["outcome"]) for a in rebills(mesh, merchant, subscription["id"])
    )
    assert attempts == [(1, "declined_hard"), (2, "declined_hard")]
    assert charges_of(mesh, 14205) == []


def test_concurrent_updates_with_new_cards_charge_the_open_period_at_most_once(mesh, merchant):
    subscription = unpaid(mesh, merchant, 14206)
    bodies = [{"payment_method": new_card(mesh, merchant)} for _ in range(4)]
    answers: list = [None] * 6

    def send(n: int) -> None:
        # Four updates of their own, and two retries of one keyed update.
        body, key = (bodies[n], None) if n < 4 else (bodies[0], "rescue-14206")
        answers[n] = update(mesh, merchant, subscription["id"], body, key=key)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [a.status for a in answers] == [200] * 6, [a.body for a in answers]
    assert len(charges_of(mesh, 14206)) == 1
    after = get(mesh, merchant, f"/v1/subscriptions/{subscription['id']}").body
    assert after["status"] == "active"
    outcomes = [a["outcome"] for a in rebills(mesh, merchant, subscription["id"])]
    assert sorted(outcomes) == ["declined_hard", "succeeded"]


def test_an_active_subscriptions_new_card_and_amount_count_from_the_next_period(mesh, merchant):
    start = datetime(2028, 7, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    created = subscribe(mesh, merchant, 14207, test_clock=clock)
    assert created.body["status"] == "active"
    card = new_card(mesh, merchant, cards.MASTERCARD)

    changed = update(mesh, merchant, created.body["id"], {"payment_method": card, "amount": 14208})

    assert changed.status == 200, changed.body
    assert (changed.body["payment_method"], changed.body["amount"]) == (card, "14208")
    assert changed.body["current_period_start"] == created.body["current_period_start"]
    assert len(charges_of(mesh, 14207)) == 1  # nothing charged by the update itself
    assert charges_of(mesh, 14208) == []
    advance(mesh, merchant, clock, start + timedelta(days=31, hours=1))
    assert len(charges_of(mesh, 14208)) == 1
    assert len(charges_of(mesh, 14207)) == 1


def detached_card(mesh, merchant) -> str:
    card = new_card(mesh, merchant)
    assert post(mesh, merchant, f"/v1/payment_methods/{card}/detach").status == 200
    return card


@pytest.mark.parametrize(
    ("field", "reason", "change"),
    [
        ("amount", "invalid_amount", lambda *_: {"amount": 0}),
        ("amount", "invalid_amount", lambda *_: {"amount": -14209}),
        ("amount", "invalid_amount", lambda *_: {"amount": 100_000_000}),
        ("metadata", "too_many_keys", lambda *_: {"metadata": {f"k{n}": "v" for n in range(50)}}),
        ("metadata." + "k" * 40, "invalid_metadata", lambda *_: {"metadata": {"k" * 41: "v"}}),
        ("metadata.note", "invalid_metadata", lambda *_: {"metadata": {"note": "x" * 501}}),
        ("payment_method", "invalid_payment_method", lambda *_: {"payment_method": "card_1"}),
        ("payment_method", "invalid_payment_method", lambda *_: {"payment_method": ""}),
        ("payment_method", "resource_missing", lambda *_: {"payment_method": "pm_doesnotexist"}),
        (
            "payment_method",
            "resource_missing",
            lambda mesh, _, other: {"payment_method": new_card(mesh, other)},
        ),
        (
            "payment_method",
            "resource_missing",
            lambda mesh, merchant, _: {"payment_method": detached_card(mesh, merchant)},
        ),
        ("amout", "unknown_parameter", lambda *_: {"amout": 14209}),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(
    mesh, merchant, other_merchant, infra, field, reason, change
):
    subscription = unpaid(mesh, merchant, 14209, metadata={"plan": "pro"})
    before = recorded(infra, subscription["id"])

    response = update(mesh, merchant, subscription["id"], change(mesh, merchant, other_merchant))

    assert response.status == 400, response.body
    assert violations(response) == {field: reason}
    assert get(mesh, merchant, f"/v1/subscriptions/{subscription['id']}").body == subscription
    assert recorded(infra, subscription["id"]) == before
    assert len(rebills(mesh, merchant, subscription["id"])) == 1
    assert charges_of(mesh, 14209) == []


def test_a_canceled_subscription_is_not_updated_and_another_merchants_is_missing(
    mesh, merchant, other_merchant
):
    created = subscribe(mesh, merchant, 14210).body
    canceled = post(mesh, merchant, f"/v1/subscriptions/{created['id']}/cancel").body
    card = new_card(mesh, merchant)

    refused = update(mesh, merchant, created["id"], {"payment_method": card, "amount": 14211})

    assert refused.status == 400, refused.body
    assert reason_of(refused) == "subscription_canceled"
    assert "canceled" in refused.body["message"]
    assert get(mesh, merchant, f"/v1/subscriptions/{created['id']}").body == canceled
    theirs = update(mesh, other_merchant, created["id"], {"amount": 14211})
    assert theirs.status == 404
    assert len(charges_of(mesh, 14210)) == 1


def test_a_renewal_started_before_a_card_change_is_finished_with_the_card_it_started_with(
    mesh, merchant, infra, knobs
):
    """The renewal's answer is lost (the sandbox applies the charge, then hangs), so its
    attempt is asked again later under its key; the card changes meanwhile. Asked with the
    new card, the gateway would refuse the key as reused and the attempt would stay unknown:
    the attempt is asked again with the card it started with, and the new card pays the next
    period."""
    amount = 14212
    start = datetime(2028, 8, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    created = subscribe(mesh, merchant, amount, test_clock=clock).body
    knobs(ambiguous_rate=1, operations=["authorize"])
    moved = post(
        mesh,
        merchant,
        f"/v1/test_clocks/{clock}/advance",
        {"frozen_time": iso(start + timedelta(days=31, hours=1))},
    )
    assert moved.status == 200, moved.body
    wait_until(
        lambda: attempt_outcomes(infra, created["id"], "2028-09-01") == [(1, "unknown")],
        timeout=60,
        interval=0.2,
    )

    card = new_card(mesh, merchant, cards.MASTERCARD)
    changed = update(mesh, merchant, created["id"], {"payment_method": card})
    assert changed.status == 200, changed.body
    assert (changed.body["status"], changed.body["payment_method"]) == ("active", card)
    knobs(ambiguous_rate=0)
    close_sandbox_breaker(mesh, merchant)

    wait_until(
        lambda: get(mesh, merchant, f"/v1/test_clocks/{clock}").body["status"] == "ready",
        timeout=120,
        interval=0.5,
    )
    assert attempt_outcomes(infra, created["id"], "2028-09-01") == [(1, "succeeded")]
    assert len(charges_of(mesh, amount)) == 2
    advance(mesh, merchant, clock, start + timedelta(days=62))
    assert len(charges_of(mesh, amount)) == 3
    with psycopg.connect(infra.database_url) as db:
        cards_charged = db.execute(
            "SELECT payment_method FROM rebill.rebill_jobs WHERE subscription_id = %s"
            " ORDER BY period_start",
            (created["id"],),
        ).fetchall()
    old = created["payment_method"]
    assert cards_charged == [(old,), (old,), (card,)]


def attempt_outcomes(infra, subscription: str, period_start: str) -> list[tuple[int, str]]:
    with psycopg.connect(infra.database_url) as db:
        return db.execute(
            "SELECT a.attempt, a.outcome FROM rebill.rebill_attempts a"
            " JOIN rebill.rebill_jobs j ON j.id = a.job_id"
            " WHERE a.subscription_id = %s AND j.period_start::date = %s ORDER BY a.attempt",
            (subscription, period_start),
        ).fetchall()
