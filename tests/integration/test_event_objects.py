"""One object everywhere: every event type a merchant can receive is made happen through
Envoy, received signed at a real endpoint, and read again at `GET /v1/events/{id}`. Its
`data.object` is the JSON that `GET` answered for that object right after the change that
raised the event (the same fields, types and formats, `metadata` included), and its `created`
is written as the `created` of `GET /v1/events/{id}` is."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import cards
from tests.support.payments import post
from tests.support.psp import NO_FAULTS, close_sandbox_breaker, sandbox
from tests.support.psp_webhooks import signed
from tests.support.rebill import get, iso
from tests.support.receiver import Script
from tests.support.vault import tokenize
from tests.support.waiting import wait_until
from tests.support.webhooks import Hooks, verified
from webhook_svc.domain.rules import EVENT_TYPES

pytestmark = pytest.mark.integration

SOFT_DECLINE = "4000000000009995"  # insufficient funds at the sandbox: dunning retries it
RFC3339_UTC = "%Y-%m-%dT%H:%M:%S"

# Each event type merchants can subscribe to, and the test here that checks its object.
CHECKED_BY = {
    "payment_intent.created": "test_payment_intent_events",
    "payment_intent.requires_capture": "test_payment_intent_events",
    "payment_intent.succeeded": "test_payment_intent_events",
    "payment_intent.payment_failed": "test_payment_intent_events",
    "payment_intent.canceled": "test_payment_intent_events",
    "payment_intent.requires_action": "test_three_d_secure_events",
    "refund.created": "test_refund_events",
    "refund.succeeded": "test_refund_events",
    "refund.failed": "test_refund_events",
    "payment_method.created": "test_payment_method_events",
    "payment_method.detached": "test_payment_method_events",
    "subscription.created": "test_subscription_and_renewal_events",
    "subscription.updated": "test_subscription_and_renewal_events",
    "subscription.past_due": "test_subscription_and_renewal_events",
    "subscription.canceled": "test_subscription_and_renewal_events",
    "rebill.succeeded": "test_subscription_and_renewal_events",
    "rebill.failed": "test_subscription_and_renewal_events",
    "rebill.action_required": "test_three_d_secure_events",
    "webhook_endpoint.disabled": "test_webhook_endpoint_events",
    "charge.dispute.created": "test_dispute_events",
    "charge.dispute.updated": "test_dispute_events",
    "charge.dispute.closed": "test_dispute_events",
    "payment_intent.disputed": "test_dispute_events",
}


@pytest.fixture(scope="module")
def hooks(webhook_hooks) -> Hooks:
    """A mesh apart with a webhook receiver, shared with test_webhooks."""
    return webhook_hooks


class Watched:
    """A merchant of its own with one endpoint that takes every event."""

    def __init__(self, hooks: Hooks, name: str):
        self.hooks = hooks
        self.merchant = hooks.merchant(name)
        self.path = f"/all-{name}"
        self.secret = hooks.endpoint(self.merchant, self.path)["secret"]

    @property
    def mesh(self):
        return self.hooks.mesh

    def post(self, path: str, body: dict | None = None) -> dict:
        response = post(self.mesh, self.merchant, path, body)
        assert response.status == 200, response.body
        return response.body

    def get(self, path: str) -> dict:
        response = get(self.mesh, self.merchant, path)
        assert response.status == 200, response.body
        return response.body

    def events(self, event_type: str) -> list[dict]:
        """The events of that type received so far (each once), verified as the merchant's
        Standard Webhooks library does."""
        bodies = [verified(self.secret, r) for r in self.hooks.receiver.at(self.path)]
        return list({b["id"]: b for b in bodies if b["type"] == event_type}.values())

    def objects(self, event_type: str, timeout: float = 30, **having) -> list[dict]:
        """The objects of the events of that type whose fields have the values `having`, once
        there is one."""
        return wait_until(
            lambda: [
                e["data"]["object"]
                for e in self.events(event_type)
                if all(e["data"]["object"].get(k) == v for k, v in having.items())
            ],
            timeout=timeout,
            interval=0.2,
        )

    def check(self, event_type: str, shown: dict) -> dict:
        """The one event of that type about `shown`'s object carries `shown` (a GET's answer)
        as its object, delivered and read back, and both say when it happened in one format."""
        [shown_there] = self.objects(event_type, id=shown["id"])
        assert shown_there == shown, event_type
        [event] = [e for e in self.events(event_type) if e["data"]["object"]["id"] == shown["id"]]
        stored = self.get(f"/v1/events/{event['id']}")
        assert stored["object"] == shown, event_type
        assert stored["created"] == event["created"], event_type
        _rfc3339(event["created"])
        return event


def _rfc3339(text: str) -> datetime:
    """A proto3 JSON timestamp: UTC, `Z`, 0, 3, 6 or 9 fractional digits."""
    assert isinstance(text, str) and text.endswith("Z"), text
    whole, _, fraction = text[:-1].partition(".")
    assert fraction == "" or (fraction.isdigit() and len(fraction) in (3, 6, 9)), text
    return datetime.strptime(whole, RFC3339_UTC).replace(tzinfo=UTC)


def test_every_event_type_of_the_catalogue_is_checked_here():
    assert set(CHECKED_BY) == set(EVENT_TYPES)


def test_payment_intent_events(hooks):
    watch = Watched(hooks, "intents")
    card = tokenize(watch.mesh, watch.merchant).body["id"]
    body = {
        "amount": 1999,
        "currency": "usd",
        "description": "order 1001",
        "metadata": {"order_id": "1001"},
    }
    created = watch.post("/v1/payment_intents", {**body, "capture_method": "manual"})
    shown_created = watch.get(f"/v1/payment_intents/{created['id']}")
    watch.post(f"/v1/payment_intents/{created['id']}/confirm", {"payment_method": card})
    shown_authorized = watch.get(f"/v1/payment_intents/{created['id']}")
    watch.post(f"/v1/payment_intents/{created['id']}/capture")
    shown_captured = watch.get(f"/v1/payment_intents/{created['id']}")

    to_cancel = watch.post(
        "/v1/payment_intents",
        {**body, "payment_method": card, "confirm": True, "capture_method": "manual"},
    )
    watch.post(f"/v1/payment_intents/{to_cancel['id']}/cancel")
    shown_canceled = watch.get(f"/v1/payment_intents/{to_cancel['id']}")

    declined_card = tokenize(watch.mesh, watch.merchant, cards.VISA_DECLINE).body["id"]
    declined = watch.post(
        "/v1/payment_intents", {**body, "payment_method": declined_card, "confirm": True}
    )
    shown_declined = watch.get(f"/v1/payment_intents/{declined['id']}")

    watch.check("payment_intent.created", shown_created)
    watch.check("payment_intent.requires_capture", shown_authorized)
    succeeded = watch.check("payment_intent.succeeded", shown_captured)
    watch.check("payment_intent.canceled", shown_canceled)
    watch.check("payment_intent.payment_failed", shown_declined)
    # What a merchant looks for in it: its order, and the amount as the API writes it.
    paid = succeeded["data"]["object"]
    assert paid["metadata"] == {"order_id": "1001"} and paid["amount"] == "1999"
    assert paid["description"] == "order 1001" and paid["payment_method"] == card
    assert "object" not in paid and "merchant_id" not in paid


def test_refund_events(hooks):
    watch = Watched(hooks, "refunds")
    card = tokenize(watch.mesh, watch.merchant).body["id"]
    paid = watch.post(
        "/v1/payment_intents",
        {"amount": 3000, "currency": "usd", "payment_method": card, "confirm": True},
    )

    refunded = watch.post("/v1/refunds", {"payment_intent": paid["id"], "amount": 1000})
    shown_refunded = watch.get(f"/v1/refunds/{refunded['id']}")
    assert shown_refunded["status"] == "succeeded"

    # The PSP refunds but its answer is lost: the refund stays pending, as it was created,
    # until the recovery sweep asks again.
    sandbox(watch.mesh, "/_knobs", {**NO_FAULTS, "ambiguous_rate": 1, "operations": ["refund"]})
    try:
        pending = watch.post("/v1/refunds", {"payment_intent": paid["id"], "amount": 500})
        shown_pending = watch.get(f"/v1/refunds/{pending['id']}")
        assert shown_pending["status"] == "pending"
    finally:
        sandbox(watch.mesh, "/_knobs", NO_FAULTS)
    watch.check("refund.created", shown_pending)
    settled = wait_until(
        lambda: (r := watch.get(f"/v1/refunds/{pending['id']}"))["status"] == "succeeded" and r,
        timeout=60,
    )
    watch.check("refund.succeeded", settled)
    watch.check("refund.succeeded", shown_refunded)

    # The PSP refuses every refund: it fails, and its amount is the intent's again.
    sandbox(watch.mesh, "/_knobs", {**NO_FAULTS, "error_rate": 1, "operations": ["refund"]})
    try:
        failing = post(
            watch.mesh, watch.merchant, "/v1/refunds", {"payment_intent": paid["id"], "amount": 1}
        )
        assert failing.status == 503, failing.body
    finally:
        sandbox(watch.mesh, "/_knobs", NO_FAULTS)
    [failed] = watch.objects("refund.failed")
    watch.check("refund.failed", watch.get(f"/v1/refunds/{failed['id']}"))


def test_payment_method_events(hooks):
    watch = Watched(hooks, "cards")
    created = tokenize(
        watch.mesh,
        watch.merchant,
        billing_details={"name": "Ada Lovelace", "address": {"country": "GB"}},
    ).body
    shown = watch.get(f"/v1/payment_methods/{created['id']}")
    detached = watch.post(f"/v1/payment_methods/{created['id']}/detach")
    # A detached card is gone for GET (404): the detach's answer is the object at that moment.
    assert get(watch.mesh, watch.merchant, f"/v1/payment_methods/{created['id']}").status == 404
    watch.check("payment_method.created", shown)
    watch.check("payment_method.detached", detached)


def test_subscription_and_renewal_events(hooks):
    watch = Watched(hooks, "renewals")
    card = tokenize(watch.mesh, watch.merchant).body["id"]
    plan = {"currency": "usd", "interval": "month", "metadata": {"customer": "c-42"}}

    # A trial: nothing is charged while it is created.
    trial_end = datetime.now(UTC) + timedelta(days=7)
    trialing = watch.post(
        "/v1/subscriptions",
        {**plan, "payment_method": card, "amount": 1500, "trial_end": iso(trial_end)},
    )
    shown_trialing = watch.get(f"/v1/subscriptions/{trialing['id']}")
    watch.post(f"/v1/subscriptions/{trialing['id']}/pause")
    shown_paused = watch.get(f"/v1/subscriptions/{trialing['id']}")
    watch.post(f"/v1/subscriptions/{trialing['id']}/cancel")
    shown_canceled = watch.get(f"/v1/subscriptions/{trialing['id']}")

    # Charged at creation: the period is paid and the subscription active.
    paying = watch.post("/v1/subscriptions", {**plan, "payment_method": card, "amount": 1600})
    shown_paying = watch.get(f"/v1/subscriptions/{paying['id']}")

    # A soft decline: past due, retried later.
    soft_card = tokenize(watch.mesh, watch.merchant, SOFT_DECLINE).body["id"]
    behind = watch.post("/v1/subscriptions", {**plan, "payment_method": soft_card, "amount": 1700})
    shown_behind = watch.get(f"/v1/subscriptions/{behind['id']}")
    assert shown_behind["status"] == "past_due"

    # A hard decline: dunning gives up at once, the period fails.
    hard_card = tokenize(watch.mesh, watch.merchant, cards.VISA_DECLINE).body["id"]
    lost = watch.post("/v1/subscriptions", {**plan, "payment_method": hard_card, "amount": 1800})
    shown_lost = watch.get(f"/v1/subscriptions/{lost['id']}")
    assert shown_lost["status"] == "unpaid"

    watch.check("subscription.created", shown_trialing)
    watch.check("subscription.updated", shown_paused)
    watch.check("subscription.canceled", shown_canceled)
    watch.check("subscription.updated", shown_paying)
    watch.check("subscription.past_due", shown_behind)
    watch.check("subscription.updated", shown_lost)

    # A renewal (one period's billing) is read at GET /v1/renewals/{id}.
    [paid] = watch.objects("rebill.succeeded", subscription=paying["id"])
    watch.check("rebill.succeeded", watch.get(f"/v1/renewals/{paid['id']}"))
    [failed] = watch.objects("rebill.failed", subscription=lost["id"])
    watch.check("rebill.failed", watch.get(f"/v1/renewals/{failed['id']}"))


def test_three_d_secure_events(hooks):
    watch = Watched(hooks, "customer-action")
    card = tokenize(watch.mesh, watch.merchant, cards.THREE_D_SECURE).body["id"]
    waiting = watch.post(
        "/v1/payment_intents",
        {"amount": 2500, "currency": "usd", "payment_method": card, "confirm": True},
    )
    shown_waiting = watch.get(f"/v1/payment_intents/{waiting['id']}")
    assert shown_waiting["status"] == "requires_action"
    watch.check("payment_intent.requires_action", shown_waiting)

    # A renewal whose charge needs the customer: its first period, charged at creation.
    subscribed = watch.post(
        "/v1/subscriptions",
        {"payment_method": card, "amount": 1900, "currency": "usd", "interval": "month"},
    )
    [asked] = watch.objects("rebill.action_required", subscription=subscribed["id"])
    shown_asked = watch.get(f"/v1/renewals/{asked['id']}")
    assert shown_asked["status"] == "requires_action" and shown_asked["payment_intent"]
    watch.check("rebill.action_required", shown_asked)


def test_dispute_events(hooks):
    watch = Watched(hooks, "disputes")
    # The dispute is made at the sandbox: the payment must not have failed over to stripe
    # because an earlier test's slow answers left the sandbox's breaker open.
    close_sandbox_breaker(watch.mesh, watch.merchant)
    card = tokenize(watch.mesh, watch.merchant).body["id"]
    paid = watch.post(
        "/v1/payment_intents",
        {"amount": 2500, "currency": "usd", "payment_method": card, "confirm": True},
    )
    charge = hooks.faults.scalar(
        "SELECT psp_reference FROM gateway.payment_intents WHERE id = %s", (paid["id"],)
    )
    at_psp = sandbox(watch.mesh, f"/_dashboard/charges/{charge}/dispute", {"amount": 900})
    [(dispute_id,)] = wait_until(
        lambda: hooks.faults.rows(
            "SELECT id FROM gateway.disputes WHERE payment_intent = %s", (paid["id"],)
        ),
        timeout=30,
    )
    shown_opened = watch.get(f"/v1/disputes/{dispute_id}")
    watch.check("charge.dispute.created", shown_opened)
    watch.check("payment_intent.disputed", watch.get(f"/v1/payment_intents/{paid['id']}"))

    # Under review: the sandbox has no such step of its own; Stripe's event, signed here.
    under_review = {
        "id": f"evt_review_{dispute_id}",
        "object": "event",
        "type": "charge.dispute.updated",
        "created": at_psp["created"],
        "data": {"object": {**at_psp, "status": "under_review"}},
    }
    answer = signed(watch.mesh, "sandbox", under_review)
    assert answer.status == 200, answer.body
    shown_reviewed = watch.get(f"/v1/disputes/{dispute_id}")
    assert shown_reviewed["status"] == "under_review"
    watch.check("charge.dispute.updated", shown_reviewed)

    sandbox(watch.mesh, f"/_dashboard/disputes/{at_psp['id']}/close", {"status": "lost"})
    shown_lost = wait_until(
        lambda: (d := watch.get(f"/v1/disputes/{dispute_id}"))["status"] == "lost" and d,
        timeout=30,
    )
    watch.check("charge.dispute.closed", shown_lost)


def test_webhook_endpoint_events(hooks):
    watch = Watched(hooks, "endpoints")
    hooks.receiver.scripts["/endpoints-gone"] = Script(statuses=[410])
    gone = hooks.endpoint(watch.merchant, "/endpoints-gone", ["payment_intent.created"])
    card = tokenize(watch.mesh, watch.merchant).body["id"]
    watch.post("/v1/payment_intents", {"amount": 500, "currency": "usd", "payment_method": card})
    shown = wait_until(
        lambda: (
            (e := watch.get(f"/v1/webhook_endpoints/{gone['id']}"))["status"] == "disabled" and e
        ),
        timeout=30,
    )
    watch.check("webhook_endpoint.disabled", shown)


def test_an_event_written_before_events_carried_api_objects_is_still_delivered(hooks):
    """An outbox row as the code before wrote it (the object's fields flat in the payload),
    still pending when the new code starts, goes out as it was written then."""
    watch = Watched(hooks, "legacy")
    legacy = {
        "merchant_id": watch.merchant.id,
        "livemode": False,
        "status": "succeeded",
        "amount": 1000,
        "amount_capturable": 0,
        "amount_received": 1000,
        "amount_refunded": 0,
        "currency": "usd",
        "psp": "sandbox",
        "last_payment_error": None,
    }
    hooks.faults.db.execute(
        "INSERT INTO gateway.outbox (event_id, event_type, aggregate_type, aggregate_id, payload)"
        " VALUES ('evt_legacyShapeBeforeObjects0001', 'payment_intent.succeeded',"
        " 'payment_intent', 'pi_legacyShapeBeforeObjects01', %s)",
        (json.dumps(legacy),),
    )
    [shown] = watch.objects("payment_intent.succeeded", id="pi_legacyShapeBeforeObjects01")
    assert shown == {
        "id": "pi_legacyShapeBeforeObjects01",
        "object": "payment_intent",
        **{k: v for k, v in legacy.items() if k != "merchant_id"},
    }
    [event] = watch.events("payment_intent.succeeded")
    stored = watch.get(f"/v1/events/{event['id']}")
    assert stored["object"] == shown and stored["created"] == event["created"]
