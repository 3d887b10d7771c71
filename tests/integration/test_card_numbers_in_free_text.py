"""A card number typed into a merchant's free text (an intent's description or metadata, a
cardholder's name or address, a subscription's metadata, a webhook endpoint's description)
is refused through Envoy with 400 `card_number_in_free_text` naming the field; nothing is
stored and the answer never echoes the number (issue 27, item 5)."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from tests.support.http import call
from tests.support.mesh import create_merchant
from tests.support.payments import post
from tests.support.vault import tokenize

pytestmark = pytest.mark.integration

PAN = "4242 4242 4242 4242"
PAN_DIGITS = PAN.replace(" ", "")
OTHER_PAN = "5555-5555-5555-4444"


@pytest.fixture
def fresh(infra):
    """A merchant of this test's own: its lists start empty."""
    return create_merchant(infra, f"free-text-{uuid.uuid4().hex[:8]}")


def assert_refused(response, field: str) -> None:
    assert response.status == 400, response.body
    [info] = [d for d in response.body["details"] if d["@type"].endswith("ErrorInfo")]
    [bad] = [d for d in response.body["details"] if d["@type"].endswith("BadRequest")]
    fields = {v["field"]: v["reason"] for v in bad["field_violations"]}
    assert fields.get(field) == "card_number_in_free_text", fields
    assert info["reason"] in ("card_number_in_free_text", fields[next(iter(fields))])
    echoed = json.dumps(response.body)
    for digits in (PAN_DIGITS, "4242 4242 4242", "5555555555554444", "5555-5555-5555"):
        assert digits not in echoed


def listed(mesh, merchant, path: str) -> list:
    answer = call(mesh.url(path), headers=merchant.auth())
    assert answer.status == 200, answer.body
    return answer.body["data"]


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"description": f"card {PAN} thanks"}, "description"),
        ({"metadata": {"order_note": OTHER_PAN}}, "metadata.order_note"),
        ({"metadata": {PAN_DIGITS: "x"}}, "metadata.************4242"),
    ],
)
def test_an_intent_with_a_card_number_in_free_text_is_refused_and_not_stored(
    mesh, fresh, extra, field
):
    answer = post(mesh, fresh, "/v1/payment_intents", {"amount": 500, "currency": "usd", **extra})

    assert_refused(answer, field)
    assert listed(mesh, fresh, "/v1/payment_intents") == []


def payment_methods_of(infra, merchant) -> int:
    with psycopg.connect(infra.database_url) as db:
        return db.execute(
            "SELECT count(*) FROM vault.payment_methods WHERE merchant_id = %s", (merchant.id,)
        ).fetchone()[0]


@pytest.mark.parametrize(
    "billing, field",
    [
        ({"name": f"Jane {PAN}"}, "billing_details.name"),
        ({"address": {"line1": OTHER_PAN}}, "billing_details.address.line1"),
        ({"address": {"city": PAN}}, "billing_details.address.city"),
        ({"email": f"{PAN_DIGITS}@shop.example"}, "billing_details.email"),
    ],
)
def test_a_payment_method_with_a_card_number_in_billing_details_is_refused(
    mesh, infra, fresh, billing, field
):
    answer = tokenize(mesh, fresh, billing_details=billing)

    assert_refused(answer, field)
    assert payment_methods_of(infra, fresh) == 0


def test_a_subscription_with_a_card_number_in_metadata_is_refused(mesh, fresh):
    token = tokenize(mesh, fresh).body["id"]
    body = {
        "payment_method": token,
        "amount": 900,
        "currency": "usd",
        "interval": "month",
        "metadata": {"note": f"paid by {PAN}"},
    }

    answer = post(mesh, fresh, "/v1/subscriptions", body)

    assert_refused(answer, "metadata.note")
    assert listed(mesh, fresh, "/v1/subscriptions") == []


def test_a_webhook_endpoint_with_a_card_number_in_its_description_is_refused(mesh, infra, fresh):
    body = {
        "url": "https://shop.example/hook",
        "enabled_events": ["*"],
        "description": f"for {PAN}",
    }

    created = post(mesh, fresh, "/v1/webhook_endpoints", body)

    assert_refused(created, "description")
    assert listed(mesh, fresh, "/v1/webhook_endpoints") == []

    endpoint = f"we_{uuid.uuid4().hex[:24]}"
    with psycopg.connect(infra.database_url, autocommit=True) as db:
        db.execute(
            # A v1 endpoint's read never opens its (sealed) secret: any text stands in here.
            "INSERT INTO webhook.webhook_endpoints (id, merchant_id, livemode, url,"
            " enabled_events, status, signature_scheme, secret, description) VALUES (%s, %s,"
            " false, 'https://shop.example/hook', ARRAY['*'], 'enabled', 'v1', 'sealed',"
            " 'orders')",
            (endpoint, fresh.id),
        )
    updated = post(mesh, fresh, f"/v1/webhook_endpoints/{endpoint}", {"description": OTHER_PAN})

    assert_refused(updated, "description")
    [kept] = listed(mesh, fresh, "/v1/webhook_endpoints")
    assert kept["description"] == "orders"


def test_ordinary_free_text_with_numbers_is_stored(mesh, fresh):
    body = {
        "amount": 500,
        "currency": "usd",
        "description": "order 10023, call +1 555-123-4567",
        "metadata": {"order_id": "ord_20261207_0001", "phone": "+44 20 7946 0958"},
    }

    answer = post(mesh, fresh, "/v1/payment_intents", body)

    assert answer.status == 200, answer.body
    assert answer.body["description"] == body["description"]
    assert answer.body["metadata"] == body["metadata"]
