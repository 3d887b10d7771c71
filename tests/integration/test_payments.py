"""Taking money over REST through Envoy: the PaymentIntent lifecycle on both PSPs, declines,
illegal transitions, validation, refunds, pagination and the audit trail."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from tests.support import cards
from tests.support.envelope import reason_of, violations
from tests.support.http import call
from tests.support.mesh import base_env, create_merchant, paymesh
from tests.support.payments import pay, post, route
from tests.support.vault import tokenize

pytestmark = pytest.mark.integration


@pytest.fixture
def stripe_merchant(infra):

    merchant = create_merchant(infra, f"stripe-{uuid.uuid4().hex[:6]}")
    route(infra, merchant, "stripe")
    return merchant


@pytest.mark.parametrize("psp", ["sandbox", "stripe"])
def test_automatic_capture_succeeds_at_once(mesh, merchant, stripe_merchant, psp):
    payer = stripe_merchant if psp == "stripe" else merchant

    response = pay(mesh, payer, metadata={"order": "A-1"}, description="two books")

    assert response.status == 200, response.body
    intent = response.body
    assert intent["id"].startswith("pi_")
    assert intent["status"] == "succeeded"
    assert (intent["amount"], intent["amount_received"], intent["amount_capturable"]) == (
        "1000",
        "1000",
        "0",
    )
    assert intent["psp"] == psp
    assert intent["metadata"] == {"order": "A-1"}
    fetched = call(mesh.url(f"/v1/payment_intents/{intent['id']}"), headers=payer.auth())
    assert fetched.body == intent


@pytest.mark.parametrize("psp", ["sandbox", "stripe"])
def test_manual_capture_of_part_releases_the_rest_and_refunds_stop_at_the_captured_sum(
    mesh, merchant, stripe_merchant, psp
):
    payer = stripe_merchant if psp == "stripe" else merchant
    authorized = pay(mesh, payer, capture_method="manual").body
    assert authorized["status"] == "requires_capture"
    assert authorized["amount_capturable"] == "1000"

    captured = post(
        mesh, payer, f"/v1/payment_intents/{authorized['id']}/capture", {"amount_to_capture": 600}
    )

    assert captured.status == 200, captured.body
    assert captured.body["status"] == "succeeded"
    assert (captured.body["amount_received"], captured.body["amount_capturable"]) == ("600", "0")

    first = post(mesh, payer, "/v1/refunds", {"payment_intent": authorized["id"], "amount": 250})
    second = post(mesh, payer, "/v1/refunds", {"payment_intent": authorized["id"], "amount": 300})
    too_much = post(mesh, payer, "/v1/refunds", {"payment_intent": authorized["id"], "amount": 51})
    rest = post(mesh, payer, "/v1/refunds", {"payment_intent": authorized["id"]})

    assert first.status == 200, first.body
    assert (first.body["amount"], first.body["status"]) == ("250", "succeeded")
    assert second.status == 200
    assert too_much.status == 400 and violations(too_much) == {"amount": "invalid_amount"}
    assert rest.status == 200 and rest.body["amount"] == "50"
    intent = call(mesh.url(f"/v1/payment_intents/{authorized['id']}"), headers=payer.auth()).body
    assert intent["amount_refunded"] == "600"
    again = post(mesh, payer, "/v1/refunds", {"payment_intent": authorized["id"]})
    assert again.status == 400 and reason_of(again) == "charge_already_refunded"
    refund = call(mesh.url(f"/v1/refunds/{first.body['id']}"), headers=payer.auth())
    assert refund.status == 200 and refund.body["payment_intent"] == authorized["id"]


@pytest.mark.parametrize("psp", ["sandbox", "stripe"])
@pytest.mark.parametrize(
    ("number", "decline_code", "kind"),
    [
        (cards.VISA_DECLINE, "generic_decline", "hard"),
        (cards.VISA_INSUFFICIENT_FUNDS, "insufficient_funds", "soft"),
    ],
)
def test_a_decline_is_an_intent_back_in_requires_payment_method_not_an_error(
    mesh, merchant, stripe_merchant, psp, number, decline_code, kind
):
    """Stripe's test cards decline alike on both routes (README, "Test cards")."""
    payer = stripe_merchant if psp == "stripe" else merchant

    response = pay(mesh, payer, number)

    assert response.status == 200, response.body
    assert response.body["status"] == "requires_payment_method"
    assert response.body["psp"] == psp
    error = response.body["last_payment_error"]
    assert (error["code"], error["decline_code"], error["type"]) == (
        "card_declined",
        decline_code,
        kind,
    )
    assert response.body["amount_received"] == "0"


@pytest.mark.parametrize("psp", ["sandbox", "stripe"])
def test_a_processing_error_card_is_a_503_with_nothing_charged_on_either_route(
    mesh, merchant, stripe_merchant, psp
):
    """4000000000000119: the PSP failed to process it (no issuer declined it): every PSP of
    the route failed, so the merchant hears 503 psp_unavailable, never a decline."""
    payer = stripe_merchant if psp == "stripe" else merchant

    response = pay(mesh, payer, cards.VISA_PROCESSING_ERROR)

    assert response.status == 503, response.body
    assert reason_of(response) == "psp_unavailable"


def test_cancel_before_and_after_authorization(mesh, merchant):
    token = tokenize(mesh, merchant).body["id"]
    unconfirmed = post(
        mesh,
        merchant,
        "/v1/payment_intents",
        {"amount": 500, "currency": "eur", "payment_method": token},
    ).body
    assert unconfirmed["status"] == "requires_confirmation"
    authorized = pay(mesh, merchant, capture_method="manual").body

    for intent in (unconfirmed, authorized):
        canceled = post(mesh, merchant, f"/v1/payment_intents/{intent['id']}/cancel")
        assert canceled.status == 200, canceled.body
        assert canceled.body["status"] == "canceled"
        assert canceled.body["amount_capturable"] == "0"


def test_a_cancel_takes_stripes_cancellation_reason_and_shows_it(mesh, merchant):
    """It was refused at the edge as an unknown parameter."""
    token = tokenize(mesh, merchant).body["id"]
    unconfirmed = post(
        mesh,
        merchant,
        "/v1/payment_intents",
        {"amount": 500, "currency": "eur", "payment_method": token},
    ).body
    authorized = pay(mesh, merchant, capture_method="manual").body

    for intent, reason in ((unconfirmed, "abandoned"), (authorized, "requested_by_customer")):
        path = f"/v1/payment_intents/{intent['id']}"
        refused = post(mesh, merchant, f"{path}/cancel", {"cancellation_reason": "bored"})
        assert refused.status == 400, refused.body
        canceled = post(mesh, merchant, f"{path}/cancel", {"cancellation_reason": reason})
        assert canceled.status == 200, canceled.body
        assert (canceled.body["status"], canceled.body["cancellation_reason"]) == (
            "canceled",
            reason,
        )
        read = call(mesh.url(path), headers=merchant.auth()).body
        assert read["cancellation_reason"] == reason
    assert pay(mesh, merchant).body["cancellation_reason"] == ""  # not canceled: none


@pytest.mark.parametrize(
    ("action", "body"),
    [("capture", {}), ("cancel", {}), ("confirm", {})],
)
def test_an_illegal_transition_is_a_400_naming_the_state(mesh, merchant, action, body):
    succeeded = pay(mesh, merchant).body

    response = post(mesh, merchant, f"/v1/payment_intents/{succeeded['id']}/{action}", body)

    assert response.status == 400
    assert reason_of(response) == "payment_intent_unexpected_state"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"amount": 0}, "amount", "invalid_amount"),
        ({"amount": 100_000_000}, "amount", "invalid_amount"),
        ({"amount": -5}, "amount", "invalid_amount"),
        ({"currency": "USD"}, "currency", "invalid_currency"),
        ({"currency": "xyz"}, "currency", "invalid_currency"),
        ({"capture_method": "later"}, "capture_method", "invalid_capture_method"),
        ({"confirm": True}, "payment_method", "missing"),
        ({"payment_method": "card_123"}, "payment_method", "invalid_payment_method"),
        ({"payment_method": "pm_" + "a" * 38}, "payment_method", "invalid_payment_method"),
        ({"description": "d" * 1001}, "description", "too_long"),
        ({"metadata": {"k" * 41: "v"}}, f"metadata.{'k' * 40}", "invalid_metadata"),
        ({"metadata": {"k": "v" * 501}}, "metadata.k", "invalid_metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata", "too_many_keys"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(
    mesh, merchant, infra, body, field, reason
):
    with psycopg.connect(infra.database_url) as db:
        before = db.execute("SELECT count(*) FROM gateway.payment_intents").fetchone()[0]

    response = post(
        mesh, merchant, "/v1/payment_intents", {"amount": 100, "currency": "usd", **body}
    )

    assert response.status == 400
    assert violations(response) == {field: reason}
    with psycopg.connect(infra.database_url) as db:
        after = db.execute("SELECT count(*) FROM gateway.payment_intents").fetchone()[0]
    assert after == before


def test_another_merchant_or_mode_gets_404_on_every_verb(mesh, merchant, other_merchant):
    intent = pay(mesh, merchant, capture_method="manual").body

    for payer, live in ((other_merchant, False), (merchant, True)):
        assert (
            call(
                mesh.url(f"/v1/payment_intents/{intent['id']}"), headers=payer.auth(live=live)
            ).status
            == 404
        )
        for action in ("confirm", "capture", "cancel"):
            response = post(mesh, payer, f"/v1/payment_intents/{intent['id']}/{action}", live=live)
            assert response.status == 404, (action, response.body)
        refund = post(mesh, payer, "/v1/refunds", {"payment_intent": intent["id"]}, live=live)
        assert refund.status == 404


def test_the_list_is_newest_first_with_a_cursor(mesh, infra):

    lister = create_merchant(infra, "lister")
    made = [
        post(mesh, lister, "/v1/payment_intents", {"amount": 100 + i, "currency": "usd"}).body["id"]
        for i in range(5)
    ]

    first = call(mesh.url("/v1/payment_intents?limit=2"), headers=lister.auth()).body
    second = call(
        mesh.url(f"/v1/payment_intents?limit=2&starting_after={first['data'][-1]['id']}"),
        headers=lister.auth(),
    ).body
    last = call(
        mesh.url(f"/v1/payment_intents?limit=2&starting_after={second['data'][-1]['id']}"),
        headers=lister.auth(),
    ).body

    seen = [i["id"] for page in (first, second, last) for i in page["data"]]
    assert seen == list(reversed(made))
    assert (first["has_more"], second["has_more"], last["has_more"]) == (True, True, False)
    assert call(mesh.url("/v1/payment_intents?limit=101"), headers=lister.auth()).status == 400


def test_every_state_change_is_audited_in_a_chain_the_database_keeps_append_only(
    mesh, merchant, infra
):
    intent = pay(mesh, merchant).body

    with psycopg.connect(infra.database_url) as db:
        actions = [
            row[0]
            for row in db.execute(
                "SELECT action FROM gateway.payment_audit WHERE object_id = %s ORDER BY id",
                (intent["id"],),
            )
        ]
    assert actions == ["create", "confirm_started", "confirm"]
    assert json.loads(paymesh("audit", "verify", env=base_env(infra))) == {"intact": True}
    for statement in (
        "UPDATE gateway.payment_audit SET result = 'forged'",
        "DELETE FROM gateway.payment_audit",
        "TRUNCATE gateway.payment_audit",
    ):
        with psycopg.connect(infra.database_url) as db, pytest.raises(psycopg.Error) as raised:
            db.execute(statement)
        assert "append-only" in str(raised.value)


def test_the_outbox_carries_the_lifecycle_events(mesh, merchant, infra):
    intent = pay(mesh, merchant, capture_method="manual").body
    post(mesh, merchant, f"/v1/payment_intents/{intent['id']}/capture")

    with psycopg.connect(infra.database_url) as db:
        events = [
            row[0]
            for row in db.execute(
                "SELECT event_type FROM gateway.outbox WHERE aggregate_id = %s ORDER BY id",
                (intent["id"],),
            )
        ]
    assert events == [
        "payment_intent.created",
        "payment_intent.requires_capture",
        "payment_intent.succeeded",
    ]


def test_the_mesh_connects_each_service_as_its_own_role(mesh, infra, merchant):
    """Every process of the session's mesh is on the database as its service's role
    (test_database_roles: what those roles may do); the rebill workers as rebill's."""
    assert pay(mesh, merchant).status == 200
    with psycopg.connect(infra.database_url, autocommit=True) as db:
        users = {
            row[0]
            for row in db.execute(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
        }
    roles = {"paymesh_gateway", "paymesh_vault", "paymesh_rebill", "paymesh_webhook"}
    assert roles <= users, users
