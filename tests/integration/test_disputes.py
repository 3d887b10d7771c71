"""Disputes end to end: a dispute made and closed at the sandbox PSP's dashboard comes in as
the PSP's signed webhooks, becomes paymesh's dispute, reaches the merchant's `*` endpoint
(a real receiver on loopback, verified with `standardwebhooks` as a merchant would) as
`charge.dispute.created`, `payment_intent.disputed` and `charge.dispute.closed`, and is shown
by `GET /v1/disputes` through Envoy, to its merchant only. A mesh of this module's own:
webhook_svc admits loopback receivers here."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.fault_mesh import FaultMesh
from tests.support.http import call
from tests.support.mesh import TestMerchant, create_merchant
from tests.support.payments import pay, post
from tests.support.psp import sandbox
from tests.support.psp_webhooks import signed
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DISPUTE_EVENTS = ("charge.dispute.created", "payment_intent.disputed", "charge.dispute.closed")


@dataclass
class Disputes:
    faults: FaultMesh
    receiver: Receiver

    @property
    def mesh(self):
        return self.faults.mesh

    def merchant_with_endpoint(self, name: str) -> tuple[TestMerchant, str, str]:
        """A merchant with one endpoint for every event: (merchant, its path, its secret)."""
        merchant = create_merchant(self.faults.infra, name)
        path = f"/{name}-{uuid.uuid4().hex[:8]}"
        body = {"url": self.receiver.url(path), "enabled_events": ["*"]}
        created = post(self.mesh, merchant, "/v1/webhook_endpoints", body)
        assert created.status == 200, created.body
        return merchant, path, created.body["secret"]

    def charged(self, merchant, amount: int = 1000) -> tuple[str, str]:
        """A captured payment at the sandbox: (intent id, the sandbox's charge id)."""
        intent = pay(self.mesh, merchant, amount=amount).body
        assert (intent["status"], intent["psp"]) == ("succeeded", "sandbox"), intent
        charge = self.faults.scalar(
            "SELECT psp_reference FROM gateway.payment_intents WHERE id = %s", (intent["id"],)
        )
        return intent["id"], charge

    def get(self, merchant, path: str, live: bool = False):
        return call(self.mesh.url(path), "GET", merchant.auth(live))

    def delivered(self, path: str, secret: str, event_type: str, object_id: str) -> list[dict]:
        """The verified deliveries of `event_type` about `object_id` the endpoint got so far."""
        bodies = [Webhook(secret).verify(r.body, r.headers) for r in self.receiver.at(path)]
        return [
            b for b in bodies if b["type"] == event_type and b["data"]["object"]["id"] == object_id
        ]

    def await_delivery(self, path, secret, event_type, object_id, timeout: float = 30) -> dict:
        [body] = wait_until(
            lambda: self.delivered(path, secret, event_type, object_id), timeout=timeout
        )
        return body

    def dispute_rows(self, intent_id: str) -> list[tuple]:
        return self.faults.rows(
            "SELECT id, status, amount, psp_reference FROM gateway.disputes"
            " WHERE payment_intent = %s",
            (intent_id,),
        )


@pytest.fixture(scope="module")
def disputes(loopback_hooks) -> Disputes:
    """A mesh apart with a webhook receiver, shared with test_three_d_secure."""
    return Disputes(loopback_hooks.faults, loopback_hooks.receiver)


def dispute_at_sandbox(mesh, charge: str, **body) -> dict:
    made = sandbox(mesh, f"/_dashboard/charges/{charge}/dispute", body)
    assert "id" in made, made
    return made


def close_at_sandbox(mesh, psp_dispute: str, status: str) -> dict:
    closed = sandbox(mesh, f"/_dashboard/disputes/{psp_dispute}/close", {"status": status})
    assert closed["status"] == status, closed
    return closed


def test_a_dispute_made_at_the_psp_reaches_the_merchant_and_its_routes_until_it_is_lost(
    disputes,
):
    merchant, path, secret = disputes.merchant_with_endpoint("disputed")
    intent_id, charge = disputes.charged(merchant)

    at_psp = dispute_at_sandbox(disputes.mesh, charge, amount=600, reason="product_not_received")

    disputed = disputes.await_delivery(path, secret, "payment_intent.disputed", intent_id)
    [(dispute_id, *_)] = wait_until(lambda: disputes.dispute_rows(intent_id), timeout=10)
    created = disputes.await_delivery(path, secret, "charge.dispute.created", dispute_id)
    assert dispute_id.startswith("dp_")
    shown_in_event = created["data"]["object"]
    assert shown_in_event == {
        "id": dispute_id,
        "payment_intent": intent_id,
        "amount": "600",
        "currency": "usd",
        "reason": "product_not_received",
        "status": "needs_response",
        "psp": "sandbox",
        "psp_reference": at_psp["id"],
        "created": shown_in_event["created"],
        "livemode": False,
    }
    assert disputed["data"]["object"]["status"] == "succeeded"

    # The same dispute through Envoy: by id, in the list, by its payment; events listed.
    shown = disputes.get(merchant, f"/v1/disputes/{dispute_id}")
    assert shown.status == 200, shown.body
    # One view of it: the event's object is the GET's.
    assert shown.body == shown_in_event
    listed = disputes.get(merchant, "/v1/disputes?limit=5").body
    assert [d["id"] for d in listed["data"]] == [dispute_id] and listed["has_more"] is False
    of_payment = disputes.get(merchant, f"/v1/disputes?payment_intent={intent_id}").body
    assert [d["id"] for d in of_payment["data"]] == [dispute_id]
    for event_type, body in (
        ("charge.dispute.created", created),
        ("payment_intent.disputed", disputed),
    ):
        events = disputes.get(merchant, f"/v1/events?type={event_type}").body
        assert [e["id"] for e in events["data"]] == [body["id"]]

    close_at_sandbox(disputes.mesh, at_psp["id"], "lost")

    closed = disputes.await_delivery(path, secret, "charge.dispute.closed", dispute_id)
    assert closed["data"]["object"]["status"] == "lost"
    assert disputes.get(merchant, f"/v1/disputes/{dispute_id}").body["status"] == "lost"
    assert created["sequence"] < closed["sequence"]
    audits = disputes.faults.rows(
        "SELECT actor, action, result FROM gateway.payment_audit WHERE object_id = %s ORDER BY id",
        (dispute_id,),
    )
    assert audits == [
        ("webhook", "dispute_opened", "needs_response"),
        ("webhook", "dispute_closed", "lost"),
    ]


def test_a_won_dispute_is_closed_won_for_the_merchant(disputes):
    merchant, path, secret = disputes.merchant_with_endpoint("won")
    intent_id, charge = disputes.charged(merchant, amount=2500)
    at_psp = dispute_at_sandbox(disputes.mesh, charge)
    [(dispute_id, *_)] = wait_until(lambda: disputes.dispute_rows(intent_id), timeout=30)

    close_at_sandbox(disputes.mesh, at_psp["id"], "won")

    closed = disputes.await_delivery(path, secret, "charge.dispute.closed", dispute_id)
    assert closed["data"]["object"]["status"] == "won"
    assert closed["data"]["object"]["amount"] == "2500"
    shown = disputes.get(merchant, f"/v1/disputes/{dispute_id}").body
    assert (shown["status"], shown["reason"]) == ("won", "fraudulent")


def test_another_merchant_or_mode_gets_404_and_an_empty_list(disputes):
    merchant, _, _ = disputes.merchant_with_endpoint("owner")
    intent_id, charge = disputes.charged(merchant)
    dispute_at_sandbox(disputes.mesh, charge)
    [(dispute_id, *_)] = wait_until(lambda: disputes.dispute_rows(intent_id), timeout=30)
    other = create_merchant(disputes.faults.infra, "someone-else")

    assert disputes.get(merchant, f"/v1/disputes/{dispute_id}").status == 200
    assert disputes.get(other, f"/v1/disputes/{dispute_id}").status == 404
    assert disputes.get(merchant, f"/v1/disputes/{dispute_id}", live=True).status == 404
    assert disputes.get(other, "/v1/disputes").body["data"] == []
    assert disputes.get(other, f"/v1/disputes?payment_intent={intent_id}").body["data"] == []
    assert disputes.get(other, f"/v1/disputes?starting_after={dispute_id}").status == 400
    # An id of another kind cannot be a dispute; a page of more than 100 is refused.
    assert disputes.get(merchant, f"/v1/disputes/{intent_id}").status == 404
    assert disputes.get(merchant, "/v1/disputes?limit=101").status == 400


def test_a_repeated_psp_webhook_makes_no_second_dispute_nor_event(disputes):
    merchant, path, secret = disputes.merchant_with_endpoint("repeated")
    intent_id, charge = disputes.charged(merchant)
    sandbox(disputes.mesh, "/_knobs", {"webhook_copies": 3})
    try:
        at_psp = dispute_at_sandbox(disputes.mesh, charge)
        [(dispute_id, *_)] = wait_until(lambda: disputes.dispute_rows(intent_id), timeout=30)
        close_at_sandbox(disputes.mesh, at_psp["id"], "lost")
        disputes.await_delivery(path, secret, "charge.dispute.closed", dispute_id)
    finally:
        sandbox(disputes.mesh, "/_knobs", {"webhook_copies": 1})
    # Every copy came in, and one more, signed by hand, of the dispute's opening.
    wait_until(
        lambda: (
            disputes.faults.scalar(
                "SELECT coalesce(sum(deliveries), 0) FROM webhook.psp_inbox"
                " WHERE payment_intent = %s AND event_type LIKE 'charge.dispute.%%'",
                (intent_id,),
            )
            == 6
        ),
        timeout=30,
    )
    again = {
        "id": f"evt_again_{uuid.uuid4().hex}",
        "object": "event",
        "type": "charge.dispute.created",
        "created": at_psp["created"],
        "data": {"object": at_psp},
    }
    answer = signed(disputes.mesh, "sandbox", again)
    assert (answer.status, answer.body["outcome"]) == (200, "already_applied")

    assert [row[:2] for row in disputes.dispute_rows(intent_id)] == [(dispute_id, "lost")]
    outbox = disputes.faults.rows(
        "SELECT event_type FROM gateway.outbox WHERE aggregate_id = ANY(%s)"
        " AND event_type = ANY(%s) ORDER BY id",
        ([intent_id, dispute_id], list(DISPUTE_EVENTS)),
    )
    assert [row[0] for row in outbox] == list(DISPUTE_EVENTS)
    for event_type, object_id in zip(
        DISPUTE_EVENTS, (dispute_id, intent_id, dispute_id), strict=True
    ):
        assert len(disputes.delivered(path, secret, event_type, object_id)) == 1
    received = [json.loads(r.body)["type"] for r in disputes.receiver.at(path)]
    assert sorted(t for t in received if t in DISPUTE_EVENTS) == sorted(DISPUTE_EVENTS)
