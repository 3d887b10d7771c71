"""Merchant-facing REST through a real Envoy, transcoded to the real services."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support.envelope import assert_error_envelope
from tests.support.http import call
from tests.support.waiting import wait_for_text

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rows(infra, merchant):
    """One stored resource per service, written the way each service's tables define them."""
    suffix = uuid.uuid4().hex[:12]
    ids = {
        "payment_intent": f"pi_{suffix}",
        "payment_method": f"pm_{suffix}",
        "subscription": f"sub_{suffix}",
        "webhook_endpoint": f"we_{suffix}",
    }
    period_start = datetime(2026, 11, 1, tzinfo=UTC)
    with psycopg.connect(infra.database_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO gateway.payment_intents (id, merchant_id, livemode, amount, currency,"
            " status, capture_method, payment_method, metadata)"
            " VALUES (%s, %s, false, 1999, 'eur', 'requires_confirmation', 'automatic',"
            ' %s, \'{"order": "42"}\')',
            (ids["payment_intent"], merchant.id, ids["payment_method"]),
        )
        db.execute(
            "INSERT INTO vault.payment_methods (id, merchant_id, livemode, brand, last4,"
            " exp_month, exp_year, fingerprint) VALUES (%s, %s, false, 'visa', '4242',"
            " 12, 2030, 'fp_abc')",
            (ids["payment_method"], merchant.id),
        )
        # Paused: the scheduler leaves it alone (its card exists in no PSP).
        db.execute(
            "INSERT INTO rebill.subscriptions (id, merchant_id, livemode, payment_method, amount,"
            " currency, interval, billing_cycle_anchor, status, period_number,"
            " current_period_start, current_period_end)"
            " VALUES (%s, %s, false, %s, 500, 'usd', 'month', %s, 'paused', 0, %s, %s)",
            (
                ids["subscription"],
                merchant.id,
                ids["payment_method"],
                period_start,
                period_start,
                period_start + timedelta(days=30),
            ),
        )
        db.execute(
            # A v1 endpoint's read never opens its (sealed) secret: any text stands in here.
            "INSERT INTO webhook.webhook_endpoints (id, merchant_id, livemode, url,"
            " enabled_events, status, signature_scheme, secret) VALUES (%s, %s, false,"
            " 'https://shop.example/hook', ARRAY['payment_intent.succeeded'], 'enabled', 'v1',"
            " 'sealed')",
            (ids["webhook_endpoint"], merchant.id),
        )
    return ids


def test_a_payment_intent_reads_back_as_snake_case_json_with_zero_values(mesh, rows, merchant):
    response = call(
        mesh.url(f"/v1/payment_intents/{rows['payment_intent']}"), headers=merchant.auth()
    )

    assert response.status == 200
    intent = response.body
    assert intent["id"] == rows["payment_intent"]
    assert intent["amount"] == "1999"  # int64 is a JSON string in proto3's JSON mapping
    assert intent["currency"] == "eur"
    assert intent["status"] == "requires_confirmation"
    assert intent["amount_received"] == "0"
    assert intent["livemode"] is False
    assert intent["metadata"] == {"order": "42"}
    assert intent["payment_method"] == rows["payment_method"]


@pytest.mark.parametrize(
    ("path", "key", "field", "expected"),
    [
        ("/v1/payment_methods/{}", "payment_method", "card", {"brand": "visa", "last4": "4242"}),
        ("/v1/subscriptions/{}", "subscription", "interval", "month"),
        ("/v1/webhook_endpoints/{}", "webhook_endpoint", "url", "https://shop.example/hook"),
    ],
)
def test_every_service_answers_its_read_route_through_envoy(
    mesh, rows, merchant, path, key, field, expected
):
    response = call(mesh.url(path.format(rows[key])), headers=merchant.auth())

    assert response.status == 200
    assert response.body["id"] == rows[key]
    if isinstance(expected, dict):
        assert expected.items() <= response.body[field].items()
    else:
        assert response.body[field] == expected


def test_an_unknown_object_is_a_404_with_a_json_error_naming_the_reason(mesh, merchant):
    response = call(mesh.url("/v1/payment_intents/pi_doesnotexist"), headers=merchant.auth())

    assert response.status == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.body["code"] == 5
    assert "pi_doesnotexist" in response.body["message"]
    [info] = [d for d in response.body["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["reason"] == "resource_missing"


def test_unknown_query_parameters_are_refused_naming_them(mesh, rows, merchant):
    response = call(
        mesh.url(f"/v1/payment_intents/{rows['payment_intent']}?expand=foo&x=1"),
        headers=merchant.auth(),
    )

    assert response.status == 400
    [bad] = [d for d in assert_error_envelope(response)["details"] if "field_violations" in d]
    assert {v["field"] for v in bad["field_violations"]} == {"expand", "x"}


def test_an_unknown_path_is_a_json_404_from_the_edge(mesh, merchant):
    response = call(mesh.url("/v1/no_such_resource"), headers=merchant.auth())

    assert response.status == 404
    assert response.headers["content-type"].startswith("application/json")
    assert_error_envelope(response)


def test_edge_healthz_and_readyz_answer_200_while_every_cluster_is_healthy(mesh):
    assert call(mesh.url("/healthz")).status == 200
    assert call(mesh.url("/readyz")).status == 200


DIGITS_AS_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def test_request_headers_reach_the_service_as_metadata_and_logs_mask_the_key(mesh, rows, merchant):
    # Letters only: a random UUID's digits, dashes included, can form a Luhn-valid run of 12+
    # that the log masker rightly takes for a card number.
    request_id = f"req-{uuid.uuid4().hex.translate(DIGITS_AS_LETTERS)}"
    idempotency_key = f"idem-{uuid.uuid4().hex.translate(DIGITS_AS_LETTERS)}"
    secret = merchant.secret_key

    response = call(
        mesh.url(f"/v1/payment_intents/{rows['payment_intent']}"),
        headers={
            "x-request-id": request_id,
            "idempotency-key": idempotency_key,
            "authorization": f"Bearer {secret}",
        },
    )

    assert response.status == 200
    assert response.headers["x-request-id"] == request_id
    gateway_log = (mesh.log_dir / "gateway.log").read_text()
    assert secret not in gateway_log
    assert wait_for_text(mesh.log_dir / "envoy.log", request_id)  # access logs flush each second
    events = [json.loads(line) for line in gateway_log.splitlines() if request_id in line]
    assert events, "the gateway logged nothing carrying the request id"
    assert events[0]["idempotency_key"] == idempotency_key
    assert events[0]["api_key"] == "…" + secret[-4:]
    assert events[0]["correlation_id"] == rows["payment_intent"]
    assert len(events[0]["trace_id"]) == 32


READ_PATHS = [
    "/v1/payment_intents/{payment_intent}",
    "/v1/payment_methods/{payment_method}",
    "/v1/subscriptions/{subscription}",
    "/v1/webhook_endpoints/{webhook_endpoint}",
]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_api_key"),
        ({"authorization": "Basic abc"}, "missing_api_key"),
        ({"authorization": "Bearer sk_test_not_a_real_key_0000000000"}, "invalid_api_key"),
    ],
)
@pytest.mark.parametrize("path", READ_PATHS)
def test_every_read_needs_a_valid_api_key(mesh, rows, path, headers, reason):
    response = call(mesh.url(path.format(**rows)), headers=headers)

    assert response.status == 401
    [info] = [d for d in response.body["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["reason"] == reason


@pytest.mark.parametrize("path", READ_PATHS)
def test_another_merchants_or_the_other_modes_key_sees_a_404(
    mesh, rows, merchant, other_merchant, path
):
    for headers in (other_merchant.auth(), merchant.auth(live=True)):
        assert call(mesh.url(path.format(**rows)), headers=headers).status == 404


def test_internal_headers_from_outside_are_dropped_at_the_edge(mesh, rows, other_merchant):
    # A merchant cannot borrow the services' own headers to act as another merchant.
    response = call(
        mesh.url(f"/v1/payment_intents/{rows['payment_intent']}"),
        headers={
            **other_merchant.auth(),
            "x-paymesh-merchant-id": "acct_victim",
            "x-paymesh-service-token": "forged",
        },
    )

    assert response.status == 404
