"""A PSP that fails or forgets never becomes a customer's decline (issue 29), through Envoy,
the real gateway, vault and rebill, the sandbox PSP and localstripe:

- the sandbox down for charges: a fresh card is paid at stripe (the vault made it there, with
  its CVC, when it was tokenized), and with no PSP left the merchant hears 503
  `psp_unavailable` with Retry-After; never a decline, and the metrics say whose failure it was;
- a PSP that forgot our card (the sandbox's /_forget_cards, localstripe's flushed store) gets
  it again from the vault, once, without a CVC, and the payment is charged once (the PSP's own
  ledger says so); where the PSP will not take it without a CVC the answer is
  `card_reprovision_failed`, soft, and another PSP of the route still takes it;
- a renewal of such a card is paid, and a renewal no PSP can take is retried, never counted
  toward the subscription's final status.

The renewals' amounts, 14401–14402, are this module's own: the sandbox's ledger is shared by
the session."""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from paymesh.gateway.v1 import gateway_pb2
from tests.support.envelope import reason_of
from tests.support.http import call
from tests.support.mesh import create_merchant
from tests.support.metrics import metric
from tests.support.ops import admin, ok
from tests.support.payments import grpc_create, post, route
from tests.support.psp import breaker_state, charges_of, sandbox
from tests.support.rebill import advance, get, new_clock, rebills, subscribe
from tests.support.vault import grpc_token, tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def gateway(mesh, name: str, **labels: str) -> float:
    return metric(mesh.ports.http["gateway"], name, **labels)


def pay(mesh, merchant, token: str, amount: int = 1800):
    body = {"amount": amount, "currency": "usd", "payment_method": token, "confirm": True}
    return post(mesh, merchant, "/v1/payment_intents", body)


def routed(infra, mesh, *psps: str):
    """A merchant of its own whose payments go to `psps`, set as an operator does."""
    merchant = create_merchant(infra, f"routed-{uuid.uuid4().hex[:6]}")
    ok(admin(mesh, "SetPspRouting", {"merchant_id": merchant.id, "psp_routing": list(psps)}))
    return merchant


def vault_audit(database_url: str, token: str) -> list[tuple[str, str, str, dict]]:
    with psycopg.connect(database_url) as db:
        return db.execute(
            "SELECT actor, action, result, details FROM vault.vault_audit"
            " WHERE payment_method = %s ORDER BY id",
            (token,),
        ).fetchall()


def test_a_fresh_card_is_paid_at_stripe_while_the_sandbox_fails_every_charge(mesh, merchant, knobs):
    token = tokenize(mesh, merchant).body["id"]
    sandbox_charges = {"psp": "sandbox", "operation": "authorize"}
    errors_before = gateway(mesh, "psp_call_errors_total", **sandbox_charges)
    calls_before = gateway(mesh, "psp_calls_total", **sandbox_charges)
    stripe_errors_before = gateway(mesh, "psp_call_errors_total", psp="stripe")
    declined_before = gateway(mesh, "payments_declined_total")
    knobs(error_rate=1.0, operations=["authorize"])

    paid = pay(mesh, merchant, token)

    assert paid.status == 200, paid.body
    assert (paid.body["status"], paid.body["psp"]) == ("succeeded", "stripe"), paid.body
    assert "last_payment_error" not in paid.body
    # Every charge sent to the sandbox is its error (up to three, until its breaker opened);
    # nobody declined anything, and stripe did nothing wrong.
    errors = gateway(mesh, "psp_call_errors_total", **sandbox_charges) - errors_before
    assert errors >= 1
    assert gateway(mesh, "psp_calls_total", **sandbox_charges) - calls_before == errors
    assert gateway(mesh, "payments_declined_total") == declined_before
    assert gateway(mesh, "psp_call_errors_total", psp="stripe") == stripe_errors_before
    assert breaker_state(mesh, "stripe") == 0


def test_with_every_psp_of_the_route_down_the_merchant_hears_503_with_retry_after(
    mesh, infra, knobs
):
    payer = routed(infra, mesh, "sandbox")
    token = tokenize(mesh, payer).body["id"]
    declined_before = gateway(mesh, "payments_declined_total")
    knobs(error_rate=1.0, operations=["authorize"])

    failed = pay(mesh, payer, token)  # three 503s: the sandbox's breaker opens
    skipped = pay(mesh, payer, token)  # the open breaker skips it: no PSP left either

    for response in (failed, skipped):
        assert response.status == 503, response.body
        assert reason_of(response) == "psp_unavailable"
        assert int(response.headers["retry-after"]) > 0
    assert gateway(mesh, "payments_declined_total") == declined_before
    listed = call(mesh.url("/v1/payment_intents?limit=10"), headers=payer.auth()).body["data"]
    assert len(listed) == 2
    for intent in listed:  # nothing charged, nothing declined: it may be confirmed again
        assert intent["status"] == "requires_confirmation", intent
        assert intent["last_payment_error"]["code"] == "processing_error"


def test_a_card_the_sandbox_forgot_is_provisioned_again_and_charged_once(mesh, merchant, infra):
    token = tokenize(mesh, merchant).body["id"]
    first = pay(mesh, merchant, token)
    assert (first.body["status"], first.body["psp"]) == ("succeeded", "sandbox"), first.body
    forgotten = sandbox(mesh, "/_forget_cards", {})
    assert forgotten["forgotten"] >= 1

    again = pay(mesh, merchant, token)

    assert again.status == 200, again.body
    assert (again.body["status"], again.body["psp"]) == ("succeeded", "sandbox"), again.body
    [charge] = charges_of(mesh, again.body["id"])  # once, by the sandbox's own ledger
    assert charge["idempotency_key"].endswith(":reprovisioned:sandbox")
    assert charge["card_on_file"] is True  # a merchant-initiated card-on-file
    assert charge["amount"] == 1800 and charge["status"] == "captured"
    reprovisions = [a for a in vault_audit(infra.database_url, token) if a[1] == "reprovision"]
    assert [(actor, result) for actor, _, result, _ in reprovisions] == [("service:gateway", "ok")]
    details = reprovisions[0][3]
    assert details["psp"] == "sandbox" and details["with_cvc"] is False
    assert details["card_on_file"] == "merchant_initiated"
    assert details["replaced"] != details["psp_reference"]


def test_a_renewal_of_a_card_the_sandbox_forgot_is_paid_not_declined(mesh, merchant):
    start = datetime(2028, 3, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    created = subscribe(mesh, merchant, 14401, test_clock=clock)
    assert created.body["status"] == "active", created.body
    sandbox(mesh, "/_forget_cards", {})

    advance(mesh, merchant, clock, start + timedelta(days=32))

    subscription = get(mesh, merchant, f"/v1/subscriptions/{created.body['id']}").body
    assert subscription["status"] == "active", subscription
    attempts = sorted(rebills(mesh, merchant, created.body["id"]), key=lambda a: a["period_start"])
    assert [a["outcome"] for a in attempts] == ["succeeded", "succeeded"]
    renewal = [c for c in sandbox(mesh, "/v1/charges")["data"] if c["amount"] == 14401]
    assert len(renewal) == 2
    assert sorted(c["card_on_file"] for c in renewal) == [False, True]


def test_a_renewal_no_psp_can_take_is_retried_and_never_counted_toward_the_final_status(
    mesh, infra
):
    payer = routed(infra, mesh, "stripe")
    # A card without a CVC (imported): localstripe, like a PSP that insists, will not hold it.
    token = tokenize(mesh, payer, card={"cvc": ""}).body["id"]
    start = datetime(2028, 5, 1, tzinfo=UTC)
    clock = new_clock(mesh, payer, start)
    body = {"payment_method": token, "amount": 14402, "currency": "usd", "interval": "month"}
    created = post(mesh, payer, "/v1/subscriptions", {**body, "test_clock": clock})
    assert created.status == 200, created.body
    assert created.body["status"] == "past_due", created.body

    # The default policy gives up after five declines; eleven days hold six attempts.
    advance(mesh, payer, clock, start + timedelta(days=11))

    subscription = get(mesh, payer, f"/v1/subscriptions/{created.body['id']}").body
    assert subscription["status"] == "past_due", subscription
    assert subscription["next_attempt_at"]
    attempts = rebills(mesh, payer, created.body["id"])
    assert len(attempts) >= 6
    assert {(a["outcome"], a["decline_code"]) for a in attempts} == {
        ("not_charged", "card_reprovision_failed")
    }


def localstripe_forgets_everything(mesh) -> None:
    """As a restarted localstripe (or a Stripe account whose objects are gone) would."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{mesh.ports.localstripe}/_config/data", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
        assert answer.status == 200


def grpc_pay(mesh, merchant, token: str) -> gateway_pb2.PaymentIntent:
    request = gateway_pb2.CreatePaymentIntentRequest(
        amount=2100, currency="usd", payment_method=token, confirm=True
    )
    return grpc_create(mesh, merchant, request)[0]


def test_a_card_stripe_forgot_and_will_not_take_without_a_cvc_is_not_a_decline(fragile):
    mesh, infra, only_stripe = fragile
    route(infra, only_stripe, "stripe")
    stripe_first = create_merchant(infra, "stripe-first")
    route(infra, stripe_first, "stripe", "sandbox")
    tokens = {m.id: grpc_token(mesh, m) for m in (only_stripe, stripe_first)}
    for m in (only_stripe, stripe_first):
        paid = grpc_pay(mesh, m, tokens[m.id])
        assert (paid.status, paid.psp) == ("succeeded", "stripe")
        # The vault made the card at the sandbox too while it held the CVC.
        wait_until(
            lambda m=m: any(
                a[1] == "provision" and a[2] == "ok" and a[3]["psp"] == "sandbox"
                for a in vault_audit(infra.database_url, tokens[m.id])
            ),
            timeout=10,
        )
    localstripe_forgets_everything(mesh)

    lost = grpc_pay(mesh, only_stripe, tokens[only_stripe.id])
    elsewhere = grpc_pay(mesh, stripe_first, tokens[stripe_first.id])

    assert (lost.status, lost.psp) == ("requires_payment_method", "stripe")
    error = lost.last_payment_error
    assert (error.code, error.type, error.decline_code) == ("card_reprovision_failed", "soft", "")
    assert (elsewhere.status, elsewhere.psp) == ("succeeded", "sandbox")
    refused = [
        (a[2], a[3]["psp"], a[3]["with_cvc"])
        for a in vault_audit(infra.database_url, tokens[only_stripe.id])
        if a[1] == "reprovision"
    ]
    assert refused == [("failed", "stripe", False)]  # once, without a CVC
    stripe_intents = json.load(
        urllib.request.urlopen(  # noqa: S310 - localstripe on loopback
            urllib.request.Request(
                f"http://127.0.0.1:{mesh.ports.localstripe}/v1/payment_intents",
                headers={"Authorization": "Bearer sk_test_paymesh_dev"},
            ),
            timeout=5,
        )
    )["data"]
    assert stripe_intents == []  # nothing was charged at stripe after it forgot
