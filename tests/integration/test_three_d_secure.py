"""3-D Secure through Envoy on both PSPs: a card whose charge needs the customer's
authentication is `requires_action` with Stripe's `next_action`, is never captured, swept or
counted against its PSP, and ends as the customer's authentication ended, once, whether a
later confirm asks the PSP or the PSP's webhook tells it. A renewal of such a card is told to
the merchant as `rebill.action_required`. The PSPs' own ledgers judge what was charged.

One mesh of this module's own (its recovery sweep runs every half second and looks at what is
pending for over 10 s, as in the tests' environment), webhooks to loopback receivers admitted."""

from __future__ import annotations

import http.client
import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from tests.support import cards
from tests.support.envelope import reason_of
from tests.support.http import call
from tests.support.mesh import TestMerchant
from tests.support.metrics import metric
from tests.support.ops import admin, ok
from tests.support.payments import post
from tests.support.psp import breaker_state
from tests.support.rebill import advance, get, new_clock, rebills
from tests.support.vault import tokenize
from tests.support.waiting import wait_until
from tests.support.webhooks import Hooks

pytestmark = pytest.mark.integration

RETURN_URL = "https://shop.example/orders/42/paid"
PSPS = ["sandbox", "stripe"]


@pytest.fixture(scope="module")
def hooks(loopback_hooks) -> Hooks:
    """A mesh apart with a webhook receiver, shared with test_disputes."""
    return loopback_hooks


@pytest.fixture
def routed(hooks, monkeypatch):
    """A new merchant whose payments go to one PSP only (SetPspRouting, as an operator)."""
    monkeypatch.setenv("PAYMESH_KEYS_DIR", hooks.mesh.env["PAYMESH_KEYS_DIR"])

    def merchant(psp: str) -> TestMerchant:
        created = ok(admin(hooks.mesh, "CreateMerchant", {"name": f"3ds-{uuid.uuid4().hex[:6]}"}))
        merchant_id = created["merchant"]["id"]
        ok(admin(hooks.mesh, "SetPspRouting", {"merchant_id": merchant_id, "psp_routing": [psp]}))
        return TestMerchant(merchant_id, created["secret_key"], created["live_secret_key"])

    return merchant


def pay_3ds(mesh, payer, **fields) -> dict:
    token = tokenize(mesh, payer, cards.THREE_D_SECURE).body["id"]
    body = {
        "amount": 2500,
        "currency": "usd",
        "payment_method": token,
        "confirm": True,
        "return_url": RETURN_URL,
        **fields,
    }
    response = post(mesh, payer, "/v1/payment_intents", body)
    assert response.status == 200, response.body
    return response.body


def intent_of(mesh, payer, intent_id: str) -> dict:
    return call(mesh.url(f"/v1/payment_intents/{intent_id}"), headers=payer.auth()).body


def authenticate(mesh, intent: dict, succeed: bool) -> None:
    """The customer at the PSP's page of `intent`'s next_action."""
    url = intent["next_action"]["redirect_to_url"]["url"]
    if intent["psp"] == "sandbox":
        answer = call(f"{url}/complete", "POST", {}, {"result": "succeed" if succeed else "fail"})
    else:  # localstripe: its authentication call stands for Stripe's page (see the README)
        answer = call(f"{url}&success={str(succeed).lower()}", "POST", {}, {"key": "pk_test_x"})
    assert answer.status == 200, answer.body


def psp_charges(mesh, intent_id: str, psp: str) -> list[dict]:
    """What the PSP's own ledger holds for the intent's attempts (keys start with its id)."""
    if psp == "sandbox":
        every = call(f"http://127.0.0.1:{mesh.ports.sandbox_psp}/v1/charges").body["data"]
        return [c for c in every if (c["idempotency_key"] or "").startswith(f"{intent_id}:")]
    stripe = f"http://127.0.0.1:{mesh.ports.localstripe}/v1/payment_intents?limit=100"
    every = call(stripe, headers={"authorization": "Bearer sk_test_paymesh_dev"}).body["data"]
    return [
        i
        for i in every
        if (i.get("metadata") or {}).get("paymesh_attempt", "").startswith(f"{intent_id}:")
    ]


def charged(mesh, intent_id: str, psp: str) -> list[int]:
    """The amounts the PSP took for the intent."""
    if psp == "sandbox":
        return [
            c["amount_captured"]
            for c in psp_charges(mesh, intent_id, psp)
            if c["status"] == "captured"
        ]
    return [i["amount"] for i in psp_charges(mesh, intent_id, psp) if i["status"] == "succeeded"]


def already_applied(mesh, psp: str) -> float:
    """The PSP's webhooks that reported what paymesh had recorded already, as webhook_svc
    settled them: the gateway answered so, or webhook_svc knew it from the gateway's own
    event (the echo of a capture is not sent to the gateway)."""
    return metric(
        mesh.ports.http["webhook"], "webhook_psp_events_total", psp=psp, outcome="already_applied"
    )


def sweep_rounds(mesh) -> float:
    return metric(mesh.ports.http["gateway"], "payments_recovery_sweep_rounds_total")


def sweeps_after_the_update(mesh, rounds: int) -> None:
    """Waits for `rounds` more completed rounds of the gateway's recovery sweep (the first of
    them may have begun before the caller's last write: count one more to be sure)."""
    before = sweep_rounds(mesh)
    wait_until(lambda: sweep_rounds(mesh) >= before + rounds, timeout=20, interval=0.1)


def psp_errors(mesh, psp: str) -> float:
    return metric(mesh.ports.http["gateway"], "psp_call_errors_total", psp=psp)


class PspWebhooksHeld:
    """The PSP's webhooks kept from paymesh, so that a confirm is what completes the intent:
    the sandbox holds them until a flush; localstripe's go to a port nobody listens on."""

    def __init__(self, mesh, psp: str):
        self.mesh, self.psp = mesh, psp

    def __enter__(self):
        if self.psp == "sandbox":
            self._sandbox({"webhook_hold": True})
        else:
            self._stripe_webhooks_to("http://127.0.0.1:9/nobody")
        return self

    def __exit__(self, *_):
        if self.psp == "sandbox":
            self._sandbox({"webhook_hold": False})
            call(f"http://127.0.0.1:{self.mesh.ports.sandbox_psp}/_webhooks/flush", "POST", {}, {})
        else:
            self.mesh.configure_stripe_webhooks()

    def _sandbox(self, knobs: dict) -> None:
        call(f"http://127.0.0.1:{self.mesh.ports.sandbox_psp}/_knobs", "POST", {}, knobs)

    def _stripe_webhooks_to(self, url: str) -> None:
        config = f"http://127.0.0.1:{self.mesh.ports.localstripe}/_config/webhooks/paymesh"
        secret = self.mesh.env.get("WEBHOOK_STRIPE_SECRET") or "whsec_paymesh_dev_stripe"
        answer = call(config, "POST", {}, {"url": url, "secret": secret.split(",")[0]})
        assert answer.status == 200, answer.body


# --- payments ------------------------------------------------------------------------------


@pytest.mark.parametrize("psp", PSPS)
def test_a_3ds_card_waits_for_its_customer_never_captured_swept_or_held_against_the_psp(
    hooks, routed, psp
):
    mesh, payer = hooks.mesh, routed(psp)
    errors_before = psp_errors(mesh, psp)

    intent = pay_3ds(mesh, payer)
    capture = post(mesh, payer, f"/v1/payment_intents/{intent['id']}/capture")
    # Whatever the intent waits on is made an hour old, past the age at which the recovery
    # sweep takes up anything pending; then two whole rounds of the sweep run.
    hooks.faults.db.execute(
        "UPDATE gateway.payment_intents SET pending_since = pending_since - interval '1 hour'"
        " WHERE id = %s",
        (intent["id"],),
    )
    sweeps_after_the_update(mesh, rounds=2)
    later = intent_of(mesh, payer, intent["id"])

    assert (intent["status"], intent["psp"]) == ("requires_action", psp), intent
    assert intent["next_action"]["type"] == "redirect_to_url"
    assert intent["next_action"]["redirect_to_url"]["url"].startswith("http")
    assert intent["next_action"]["redirect_to_url"]["return_url"] == RETURN_URL
    assert (intent["amount_capturable"], intent["amount_received"]) == ("0", "0")
    assert (capture.status, reason_of(capture)) == (400, "payment_intent_unexpected_state")
    assert later == intent  # nothing swept it, nothing moved it
    assert breaker_state(mesh, psp) == 0
    assert psp_errors(mesh, psp) == errors_before
    assert charged(mesh, intent["id"], psp) == []


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize("capture_method", ["automatic", "manual"])
def test_a_confirm_after_the_customer_authenticated_records_it_and_the_psp_charged_once(
    hooks, routed, psp, capture_method
):
    mesh, payer = hooks.mesh, routed(psp)
    intent = pay_3ds(mesh, payer, capture_method=capture_method)
    told_before = already_applied(mesh, psp)

    with PspWebhooksHeld(mesh, psp):
        authenticate(mesh, intent, succeed=True)
        confirmed = post(mesh, payer, f"/v1/payment_intents/{intent['id']}/confirm")
    if psp == "sandbox":  # its webhook of the same charge, let through now, changes nothing
        wait_until(lambda: already_applied(mesh, psp) > told_before, timeout=20)
    if capture_method == "manual":
        captured = post(mesh, payer, f"/v1/payment_intents/{intent['id']}/capture")
        assert captured.status == 200, captured.body

    assert confirmed.status == 200, confirmed.body
    done = confirmed.body
    expected = "succeeded" if capture_method == "automatic" else "requires_capture"
    assert (done["status"], done["psp"]) == (expected, psp)
    assert "next_action" not in done
    final = intent_of(mesh, payer, intent["id"])
    assert (final["status"], final["amount_received"]) == ("succeeded", "2500")
    assert charged(mesh, intent["id"], psp) == [2500]
    assert len(psp_charges(mesh, intent["id"], psp)) == 1


@pytest.mark.parametrize("psp", PSPS)
def test_a_failed_authentication_needs_a_payment_method_again(hooks, routed, psp):
    mesh, payer = hooks.mesh, routed(psp)
    intent = pay_3ds(mesh, payer)

    with PspWebhooksHeld(mesh, psp):
        authenticate(mesh, intent, succeed=False)
        failed = post(mesh, payer, f"/v1/payment_intents/{intent['id']}/confirm")

    assert failed.status == 200, failed.body
    assert failed.body["status"] == "requires_payment_method"
    assert failed.body["last_payment_error"]["code"] == "payment_intent_authentication_failure"
    assert failed.body["last_payment_error"]["type"] == "soft"
    assert charged(mesh, intent["id"], psp) == []


@pytest.mark.parametrize("psp", PSPS)
def test_the_psps_webhook_of_the_authenticated_charge_completes_it_without_a_confirm(
    hooks, routed, psp
):
    mesh, payer = hooks.mesh, routed(psp)
    intent = pay_3ds(mesh, payer)

    authenticate(mesh, intent, succeed=True)
    done = wait_until(
        lambda: (i := intent_of(mesh, payer, intent["id"]))["status"] == "succeeded" and i,
        timeout=20,
    )

    assert (done["amount_received"], done["psp"]) == ("2500", psp)
    assert charged(mesh, intent["id"], psp) == [2500]


def test_the_sandboxs_page_sends_the_customer_back_to_the_merchant_and_its_webhook_completes_it(
    hooks, routed
):
    mesh, payer = hooks.mesh, routed("sandbox")
    intent = pay_3ds(mesh, payer)
    page = urlsplit(intent["next_action"]["redirect_to_url"]["url"])

    shown = call(page.geturl())
    customer = http.client.HTTPConnection(page.netloc, timeout=10)
    customer.request(
        "POST",
        f"{page.path}/complete",
        "result=succeed",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    answer = customer.getresponse()
    done = wait_until(
        lambda: (i := intent_of(mesh, payer, intent["id"]))["status"] == "succeeded" and i,
        timeout=20,
    )

    assert shown.status == 200 and f'action="{page.path}/complete"' in shown.body
    assert (answer.status, answer.getheader("Location")) == (303, RETURN_URL)
    assert done["amount_received"] == "2500"


def test_the_sandboxs_webhook_of_a_failed_authentication_completes_it_too(hooks, routed):
    mesh, payer = hooks.mesh, routed("sandbox")
    intent = pay_3ds(mesh, payer)

    authenticate(mesh, intent, succeed=False)
    failed = wait_until(
        lambda: (i := intent_of(mesh, payer, intent["id"]))["status"] != "requires_action" and i,
        timeout=20,
    )

    assert failed["status"] == "requires_payment_method"
    assert failed["last_payment_error"]["code"] == "payment_intent_authentication_failure"


@pytest.mark.parametrize("psp", PSPS)
def test_a_canceled_intent_is_voided_at_the_psp_and_the_customer_can_no_longer_pay(
    hooks, routed, psp
):
    mesh, payer = hooks.mesh, routed(psp)
    intent = pay_3ds(mesh, payer)

    canceled = post(mesh, payer, f"/v1/payment_intents/{intent['id']}/cancel")
    url = intent["next_action"]["redirect_to_url"]["url"]
    if psp == "sandbox":
        late = call(f"{url}/complete", "POST", {}, {"result": "succeed"})
    else:
        late = call(f"{url}&success=true", "POST", {}, {"key": "pk_test_x"})

    assert canceled.status == 200, canceled.body
    assert canceled.body["status"] == "canceled"
    assert late.status == 400
    assert charged(mesh, intent["id"], psp) == []


# --- renewals ------------------------------------------------------------------------------


def test_a_renewal_that_needs_the_customer_marks_the_period_and_tells_the_merchant(hooks):
    merchant = hooks.merchant(f"renew-3ds-{uuid.uuid4().hex[:6]}")
    hooks.endpoint(merchant, "/renewals")
    mesh = hooks.mesh
    start = datetime(2027, 3, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    token = tokenize(mesh, merchant, cards.THREE_D_SECURE).body["id"]
    body = {
        "payment_method": token,
        "amount": 3100,
        "currency": "usd",
        "interval": "month",
        "test_clock": clock,
        "trial_end": (start + timedelta(days=7)).isoformat().replace("+00:00", "Z"),
    }
    created = post(mesh, merchant, "/v1/subscriptions", body)
    assert created.status == 200, created.body
    subscription = created.body["id"]

    advance(mesh, merchant, clock, start + timedelta(days=8))  # the first billed period
    [attempt] = rebills(mesh, merchant, subscription)
    now = get(mesh, merchant, f"/v1/subscriptions/{subscription}").body
    intent = call(
        mesh.url(f"/v1/payment_intents/{attempt['payment_intent']}"), headers=merchant.auth()
    ).body
    told = wait_until(
        lambda: [
            event
            for event in (json.loads(r.body) for r in hooks.receiver.at("/renewals"))
            if event["type"] == "rebill.action_required"
        ],
        timeout=30,
    )

    assert (attempt["outcome"], attempt["decline_code"]) == ("requires_action", "")
    assert (intent["status"], intent["next_action"]["type"]) == (
        "requires_action",
        "redirect_to_url",
    )
    assert now["status"] == "active"  # not a decline: no dunning, never canceled or unpaid
    assert not now.get("next_attempt_at")
    [event] = told
    renewal = event["data"]["object"]
    assert renewal == get(mesh, merchant, f"/v1/renewals/{renewal['id']}").body
    assert (renewal["subscription"], renewal["payment_intent"]) == (subscription, intent["id"])
    assert (renewal["status"], renewal["period_start"][:10]) == ("requires_action", "2027-03-08")
    assert charged(mesh, intent["id"], "sandbox") == []
