"""Subscriptions as a merchant uses them through Envoy, renewed by the real scheduler, queue,
worker, gateway and sandbox PSP; test clocks move time. Charges are counted at the sandbox,
by amount: each test bills an amount of its own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.integration.test_payments import post
from tests.integration.test_vault import tokenize, violations
from tests.support import cards
from tests.support.http import call
from tests.support.psp import sandbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def get(mesh, merchant, path):
    return call(mesh.url(path), "GET", merchant.auth())


def charges_of(mesh, amount: int) -> list[dict]:
    return [c for c in sandbox(mesh, "/v1/charges")["data"] if c["amount"] == amount]


def subscribe(mesh, merchant, amount: int, number=cards.VISA, **fields):
    token = tokenize(mesh, merchant, number).body["id"]
    body = {"payment_method": token, "amount": amount, "currency": "usd", "interval": "month"}
    return post(mesh, merchant, "/v1/subscriptions", {**body, **fields})


def new_clock(mesh, merchant, at: datetime) -> str:
    response = post(mesh, merchant, "/v1/test_clocks", {"frozen_time": iso(at)})
    assert response.status == 200, response.body
    return response.body["id"]


def advance(mesh, merchant, clock: str, to: datetime, timeout: float = 120) -> dict:
    response = post(mesh, merchant, f"/v1/test_clocks/{clock}/advance", {"frozen_time": iso(to)})
    assert response.status == 200, response.body
    return wait_until(
        lambda: (
            (c := get(mesh, merchant, f"/v1/test_clocks/{clock}").body)["status"] == "ready" and c
        ),
        timeout=timeout,
        interval=0.2,
    )


def rebills(mesh, merchant, subscription: str) -> list[dict]:
    found, offset = [], 0
    while True:
        page = get(
            mesh, merchant, f"/v1/subscriptions/{subscription}/rebills?limit=100&offset={offset}"
        ).body
        found += page["data"]
        if not page["has_more"]:
            return found
        offset += 100


def test_a_subscription_charges_its_first_period_at_creation(mesh, merchant):
    created = subscribe(mesh, merchant, 4001, metadata={"plan": "pro"})
    assert created.status == 200, created.body
    subscription = created.body
    assert subscription["status"] == "active"
    assert subscription["id"].startswith("sub_")
    assert subscription["metadata"] == {"plan": "pro"}
    assert len(charges_of(mesh, 4001)) == 1
    [attempt] = rebills(mesh, merchant, subscription["id"])
    assert attempt["outcome"] == "succeeded"
    assert attempt["attempt"] == 1
    assert attempt["payment_intent"].startswith("pi_")
    fetched = get(mesh, merchant, f"/v1/subscriptions/{subscription['id']}")
    assert fetched.body == subscription


def test_a_declined_first_charge_leaves_the_subscription_past_due(mesh, merchant):
    created = subscribe(mesh, merchant, 4002, number="4000000000009995")
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
    ],
)
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(mesh, merchant, field, change):
    before = get(mesh, merchant, "/v1/subscriptions?limit=100").body["data"]
    response = subscribe(mesh, merchant, **{"amount": 4003, **change})
    assert response.status == 400, response.body
    assert field in violations(response)
    assert get(mesh, merchant, "/v1/subscriptions?limit=100").body["data"] == before
    assert charges_of(mesh, 4003) == []


def test_another_merchants_payment_method_and_subscription_are_as_good_as_missing(
    mesh, merchant, other_merchant
):
    theirs = tokenize(mesh, other_merchant).body["id"]
    body = {"payment_method": theirs, "amount": 4004, "currency": "usd", "interval": "month"}
    response = post(mesh, merchant, "/v1/subscriptions", body)
    assert response.status == 400
    assert violations(response) == {"payment_method": "resource_missing"}
    mine = subscribe(mesh, merchant, 4004).body["id"]
    assert get(mesh, other_merchant, f"/v1/subscriptions/{mine}").status == 404
    assert post(mesh, other_merchant, f"/v1/subscriptions/{mine}/cancel").status == 404


def test_a_monthly_subscription_advanced_13_months_is_charged_14_times_on_calendar_dates(
    mesh, merchant
):
    start = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    created = subscribe(mesh, merchant, 4005, test_clock=clock)
    assert created.status == 200, created.body
    assert created.body["current_period_end"] == "2027-02-28T09:30:00Z"
    advance(mesh, merchant, clock, datetime(2028, 2, 29, 12, tzinfo=UTC))
    assert len(charges_of(mesh, 4005)) == 14
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
    created = subscribe(mesh, merchant, 4006, test_clock=clock, interval="day")
    assert created.status == 200, created.body
    advance(mesh, merchant, clock, datetime(2030, 3, 1, tzinfo=UTC), timeout=300)
    # The first day at creation, then every day through 2030-03-01: 1 + 365.
    assert len(charges_of(mesh, 4006)) == 366
    assert len(rebills(mesh, merchant, created.body["id"])) == 366
