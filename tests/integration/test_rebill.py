"""Subscriptions as a merchant uses them through Envoy, renewed by the real scheduler, queue,
worker, gateway and sandbox PSP; test clocks move time. Charges are counted at the sandbox,
by amount: each test bills an amount of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support import cards
from tests.support.envelope import reason_of, violations
from tests.support.ops import grpcurl
from tests.support.payments import post
from tests.support.psp import sandbox
from tests.support.rebill import advance, charges_of, get, iso, new_clock, rebills, subscribe
from tests.support.vault import tokenize

pytestmark = pytest.mark.integration


def test_a_subscription_charges_its_first_period_at_creation(mesh, merchant):
    created = subscribe(mesh, merchant, 14001, metadata={"plan": "pro"})
    assert created.status == 200, created.body
    subscription = created.body
    assert subscription["status"] == "active"
    assert subscription["id"].startswith("sub_")
    assert subscription["metadata"] == {"plan": "pro"}
    assert len(charges_of(mesh, 14001)) == 1
    [attempt] = rebills(mesh, merchant, subscription["id"])
    assert attempt["outcome"] == "succeeded"
    assert attempt["attempt"] == 1
    assert attempt["payment_intent"].startswith("pi_")
    fetched = get(mesh, merchant, f"/v1/subscriptions/{subscription['id']}")
    assert fetched.body == subscription


def test_a_retried_creation_with_the_same_key_charges_once(mesh, merchant, infra):
    """A key answers its own request again (idempotent-replayed), refuses another request
    with 409 idempotency_key_reused, and is stored only as a keyed digest: some merchants
    send card numbers as keys."""
    token = tokenize(mesh, merchant).body["id"]
    body = {"payment_method": token, "amount": 14015, "currency": "usd", "interval": "week"}
    key = "signup-4242424242424242"
    first = post(mesh, merchant, "/v1/subscriptions", body, key=key)
    again = post(mesh, merchant, "/v1/subscriptions", body, key=key)
    assert first.status == again.status == 200
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body == first.body
    other = post(mesh, merchant, "/v1/subscriptions", {**body, "amount": 14016}, key=key)
    assert (other.status, reason_of(other)) == (409, "idempotency_key_reused")
    assert len(charges_of(mesh, 14015)) == 1
    assert charges_of(mesh, 14016) == []
    with psycopg.connect(infra.database_url) as db:
        (stored,) = db.execute(
            "SELECT k::text FROM rebill.idempotency_keys k WHERE object_id = %s",
            (first.body["id"],),
        ).fetchone()
    assert stored and "4242424242424242" not in stored and "signup" not in stored


def test_a_creation_retried_after_its_trial_ended_is_answered_as_before(mesh, merchant):
    """A retry is answered from its key before anything else is looked at: not refused
    because, by the clock, the trial_end it asked for has passed since."""
    start = datetime(2031, 1, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    token = tokenize(mesh, merchant).body["id"]
    body = {
        "payment_method": token,
        "amount": 14017,
        "currency": "usd",
        "interval": "month",
        "test_clock": clock,
        "trial_end": iso(start + timedelta(days=1)),
    }
    first = post(mesh, merchant, "/v1/subscriptions", body, key="trial-14017")
    assert first.status == 200, first.body
    advance(mesh, merchant, clock, start + timedelta(days=2))

    again = post(mesh, merchant, "/v1/subscriptions", body, key="trial-14017")

    assert again.status == 200, again.body
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body["id"] == first.body["id"]
    assert again.body["status"] == "active"  # as it is now: its trial ended, it was charged
    assert len(charges_of(mesh, 14017)) == 1


def test_a_creation_retried_after_its_card_was_detached_is_answered_as_before(mesh, merchant):
    """The vault is not asked about the card of a request its key has answered."""
    token = tokenize(mesh, merchant).body["id"]
    body = {"payment_method": token, "amount": 14018, "currency": "usd", "interval": "month"}
    first = post(mesh, merchant, "/v1/subscriptions", body, key="detached-14018")
    assert first.status == 200, first.body
    assert post(mesh, merchant, f"/v1/payment_methods/{token}/detach").status == 200

    again = post(mesh, merchant, "/v1/subscriptions", body, key="detached-14018")

    assert again.status == 200, again.body
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body["id"] == first.body["id"]
    assert len(charges_of(mesh, 14018)) == 1


def test_a_declined_first_charge_leaves_the_subscription_past_due(mesh, merchant):
    created = subscribe(mesh, merchant, 14002, number="4000000000009995")
    assert created.status == 200, created.body
    assert created.body["status"] == "past_due"
    assert created.body["next_attempt_at"]
    [attempt] = rebills(mesh, merchant, created.body["id"])
    assert (attempt["outcome"], attempt["decline_code"]) == ("declined_soft", "insufficient_funds")


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("amount", {"amount": 0}),
        ("currency", {"currency": "usdx"}),
        ("interval", {"interval": "fortnight"}),
        ("interval_count", {"interval": "month", "interval_count": 13}),
        ("trial_end", {"trial_end": "2020-01-01T00:00:00Z"}),
        ("billing_cycle_anchor", {"billing_cycle_anchor": "2020-01-01T00:00:00Z"}),
        ("payment_method", {"payment_method": "pm_doesnotexist"}),
        ("test_clock", {"test_clock": "clock_doesnotexist"}),
        ("test_clock", {"test_clock": "sub_notaclock"}),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(mesh, merchant, field, change):
    before = get(mesh, merchant, "/v1/subscriptions?limit=100").body["data"]
    response = subscribe(mesh, merchant, **{"amount": 14003, **change})
    assert response.status == 400, response.body
    assert field in violations(response)
    assert get(mesh, merchant, "/v1/subscriptions?limit=100").body["data"] == before
    assert charges_of(mesh, 14003) == []


def test_another_merchants_payment_method_and_subscription_are_as_good_as_missing(
    mesh, merchant, other_merchant
):
    theirs = tokenize(mesh, other_merchant).body["id"]
    body = {"payment_method": theirs, "amount": 14004, "currency": "usd", "interval": "month"}
    response = post(mesh, merchant, "/v1/subscriptions", body)
    assert response.status == 400
    assert violations(response) == {"payment_method": "resource_missing"}
    mine = subscribe(mesh, merchant, 14004).body["id"]
    assert get(mesh, other_merchant, f"/v1/subscriptions/{mine}").status == 404
    assert post(mesh, other_merchant, f"/v1/subscriptions/{mine}/cancel").status == 404


def test_a_monthly_subscription_advanced_13_months_is_charged_14_times_on_calendar_dates(
    mesh, merchant
):
    start = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    created = subscribe(mesh, merchant, 14005, test_clock=clock)
    assert created.status == 200, created.body
    assert created.body["current_period_end"] == "2027-02-28T09:30:00Z"
    advance(mesh, merchant, clock, datetime(2028, 2, 29, 12, tzinfo=UTC))
    assert len(charges_of(mesh, 14005)) == 14
    attempts = rebills(mesh, merchant, created.body["id"])
    assert [a["outcome"] for a in attempts] == ["succeeded"] * 14
    starts = sorted(a["period_start"][:10] for a in attempts)
    assert starts[:5] == ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]
    assert starts[-2:] == ["2028-01-31", "2028-02-29"]
    subscription = get(mesh, merchant, f"/v1/subscriptions/{created.body['id']}").body
    assert (subscription["status"], subscription["current_period_end"]) == (
        "active",
        "2028-03-31T09:30:00Z",
    )


def test_a_daily_subscription_advanced_a_year_is_charged_366_times(mesh, merchant):
    clock = new_clock(mesh, merchant, datetime(2029, 3, 1, tzinfo=UTC))
    created = subscribe(mesh, merchant, 14006, test_clock=clock, interval="day")
    assert created.status == 200, created.body
    advance(mesh, merchant, clock, datetime(2030, 3, 1, tzinfo=UTC), timeout=300)
    # The first day at creation, then every day through 2030-03-01: 1 + 365.
    assert len(charges_of(mesh, 14006)) == 366
    assert len(rebills(mesh, merchant, created.body["id"])) == 366


def rebill_admin(mesh, method: str, body: dict, as_operator: bool = True):
    """RebillAdminService through grpcurl, as an operator uses it."""
    return grpcurl(
        mesh, "rebill", f"paymesh.rebill.v1.RebillAdminService/{method}", body, as_operator
    )


def test_dunning_retries_a_soft_decline_on_schedule_and_a_paid_retry_reactivates(mesh, merchant):
    start = datetime(2027, 5, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    sandbox(mesh, "/_knobs", {"soft_declines": {"14010": 2}})  # the first two charges fail
    created = subscribe(mesh, merchant, 14010, test_clock=clock)
    subscription_id = created.body["id"]
    assert created.body["status"] == "past_due"
    # The first retry is due one day (± 10 % of it) after the period's first attempt.
    retry_at = datetime.fromisoformat(created.body["next_attempt_at"].replace("Z", "+00:00"))
    assert abs((retry_at - start).total_seconds() - 86400) <= 8640

    advance(mesh, merchant, clock, start + timedelta(days=2))
    after_one_retry = get(mesh, merchant, f"/v1/subscriptions/{subscription_id}").body
    assert after_one_retry["status"] == "past_due"
    advance(mesh, merchant, clock, start + timedelta(days=4))
    paid = get(mesh, merchant, f"/v1/subscriptions/{subscription_id}").body
    assert paid["status"] == "active"
    assert "next_attempt_at" not in paid
    attempts = sorted(rebills(mesh, merchant, subscription_id), key=lambda a: a["attempt"])
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "declined_soft"),
        (2, "declined_soft"),
        (3, "succeeded"),
    ]
    assert len(charges_of(mesh, 14010)) == 1  # declines move no money
    # The period stays the one that was paid late; the next one starts on its own date.
    assert paid["current_period_end"] == "2027-06-01T00:00:00Z"


def test_a_hard_decline_ends_in_the_merchants_final_state(mesh, merchant, infra):
    policy = {
        "policy": {
            "merchant_id": merchant.id,
            "retry_after_days": [1, 2],
            "final_status": "canceled",
        }
    }
    set_policy = rebill_admin(mesh, "SetRetryPolicy", policy)
    assert set_policy.returncode == 0, set_policy.stderr
    try:
        hard = subscribe(mesh, merchant, 14011, number=cards.VISA_DECLINE)
        assert hard.body["status"] == "canceled"
        assert hard.body["canceled_at"]
        # Soft declines until the budget is spent: 1 + 2 retries, then the final state.
        clock = new_clock(mesh, merchant, datetime(2027, 7, 1, tzinfo=UTC))
        soft = subscribe(mesh, merchant, 14012, number="4000000000009995", test_clock=clock)
        assert soft.body["status"] == "past_due"
        advance(mesh, merchant, clock, datetime(2027, 7, 5, tzinfo=UTC))
        ended = get(mesh, merchant, f"/v1/subscriptions/{soft.body['id']}").body
        assert ended["status"] == "canceled"
        attempts = rebills(mesh, merchant, soft.body["id"])
        assert sorted(a["attempt"] for a in attempts) == [1, 2, 3]
    finally:
        default = {**policy["policy"], "retry_after_days": [1, 3, 5, 7], "final_status": "unpaid"}
        rebill_admin(mesh, "SetRetryPolicy", {"policy": default})


def test_retry_policies_are_for_operators_only_and_checked(mesh, merchant):
    body = {"policy": {"merchant_id": merchant.id, "retry_after_days": [3, 1]}}
    refused = rebill_admin(mesh, "SetRetryPolicy", body)
    assert refused.returncode != 0
    assert "InvalidArgument" in refused.stderr
    anonymous = rebill_admin(mesh, "GetRetryPolicy", {"merchant_id": merchant.id}, False)
    assert "PermissionDenied" in anonymous.stderr


def test_cancel_now_at_period_end_pause_and_resume(mesh, merchant):
    start = datetime(2027, 9, 10, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    at_end = subscribe(mesh, merchant, 14013, test_clock=clock).body
    paused = subscribe(mesh, merchant, 14013, test_clock=clock).body
    now = subscribe(mesh, merchant, 14013, test_clock=clock).body
    assert len(charges_of(mesh, 14013)) == 3

    set_to_end = post(
        mesh, merchant, f"/v1/subscriptions/{at_end['id']}/cancel", {"at_period_end": True}
    )
    assert (set_to_end.body["status"], set_to_end.body["cancel_at_period_end"]) == ("active", True)
    assert (
        post(mesh, merchant, f"/v1/subscriptions/{paused['id']}/pause").body["status"] == "paused"
    )
    canceled = post(mesh, merchant, f"/v1/subscriptions/{now['id']}/cancel").body
    assert canceled["status"] == "canceled"
    again = post(mesh, merchant, f"/v1/subscriptions/{now['id']}/cancel")
    assert again.status == 400 and reason_of(again) == "subscription_canceled"

    advance(mesh, merchant, clock, datetime(2027, 12, 20, tzinfo=UTC))
    assert len(charges_of(mesh, 14013)) == 3  # nothing renewed: canceled, ended, paused
    ended = get(mesh, merchant, f"/v1/subscriptions/{at_end['id']}").body
    assert (ended["status"], ended["canceled_at"]) == ("canceled", "2027-10-10T00:00:00Z")

    resumed = post(mesh, merchant, f"/v1/subscriptions/{paused['id']}/resume").body
    # Periods that passed while paused are skipped: it resumes in the one holding the clock.
    assert (resumed["status"], resumed["current_period_start"]) == (
        "active",
        "2027-12-10T00:00:00Z",
    )
    advance(mesh, merchant, clock, datetime(2028, 1, 11, tzinfo=UTC))
    assert len(charges_of(mesh, 14013)) == 4
    listed = get(mesh, merchant, "/v1/subscriptions?status=canceled&limit=100").body["data"]
    assert {at_end["id"], now["id"]} <= {s["id"] for s in listed}
    assert all(s["status"] == "canceled" for s in listed)


def test_a_test_clock_never_goes_back_and_is_test_mode_only(mesh, merchant):
    clock = new_clock(mesh, merchant, datetime(2027, 1, 1, tzinfo=UTC))
    back = post(
        mesh, merchant, f"/v1/test_clocks/{clock}/advance", {"frozen_time": "2026-12-31T00:00:00Z"}
    )
    assert back.status == 400
    assert violations(back) == {"frozen_time": "clock_cannot_go_back"}
    # Periods past year 9999 cannot be computed: a clock stays well clear of it.
    too_late = {"frozen_time": "9999-06-01T00:00:00Z"}
    for path in ("/v1/test_clocks", f"/v1/test_clocks/{clock}/advance"):
        answer = post(mesh, merchant, path, too_late)
        assert answer.status == 400
        assert violations(answer) == {"frozen_time": "out_of_range"}
    assert get(mesh, merchant, f"/v1/test_clocks/{clock}").body["frozen_time"] == (
        "2027-01-01T00:00:00Z"
    )
    live = post(
        mesh, merchant, "/v1/test_clocks", {"frozen_time": "2027-01-01T00:00:00Z"}, live=True
    )
    assert live.status == 400


def test_every_rebill_change_is_audited_append_only_and_sent_as_events(mesh, merchant, infra):
    subscription = subscribe(mesh, merchant, 14014).body
    with psycopg.connect(infra.database_url) as db:
        actions = [
            row[0]
            for row in db.execute(
                "SELECT action FROM rebill.rebill_audit WHERE object_id = %s"
                " OR details->>'subscription_id' = %s ORDER BY id",
                (subscription["id"], subscription["id"]),
            )
        ]
        events = {
            row[0]
            for row in db.execute(
                "SELECT event_type FROM rebill.outbox"
                " WHERE payload->'snapshot'->>'subscription_id' = %s OR aggregate_id = %s",
                (subscription["id"], subscription["id"]),
            )
        }
    assert actions[0] == "subscription.create"
    assert {"subscription.created", "rebill.succeeded", "subscription.updated"} <= events
    for statement in (
        "UPDATE rebill.rebill_audit SET result = 'forged'",
        "DELETE FROM rebill.rebill_audit",
    ):
        with psycopg.connect(infra.database_url) as db, pytest.raises(psycopg.Error) as raised:
            db.execute(statement)
        assert "append-only" in str(raised.value)
