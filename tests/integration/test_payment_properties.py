"""A stateful property test of the real gateway (through Envoy) while the sandbox PSP lies:
answers lost after the work is done, 503s, hangs. Hypothesis drives random creates,
confirms, captures, cancels, refunds and retries under the same idempotency key; then the
faults stop, the recovery sweep settles what is unknown, and the gateway's books must match
the PSP's own ledger:

- per intent, at most one charge the PSP still holds money for;
- per intent, what the PSP captured less what it refunded is what the gateway says it
  received less what it refunded, and refunded never exceeds captured;
- nothing is left `processing`, no refund `pending`, once the sweep has run;
- every idempotency key answers with one and the same object."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from tests.support.http import call
from tests.support.mesh import create_merchant
from tests.support.payments import post, route
from tests.support.psp import NO_FAULTS, close_sandbox_breaker, sandbox
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

FAULTS = {
    "ambiguous_rate": 0.3,
    "error_rate": 0.1,
    "timeout_rate": 0.05,
    "latency_jitter_ms": 20,
    "operations": ["authorize", "capture", "void", "refund"],
}
OK_OR_EXPECTED = {200, 400, 409, 503}


@pytest.fixture
def payments_machine(mesh, infra):
    merchant = create_merchant(infra, f"props-{uuid.uuid4().hex[:6]}")
    route(infra, merchant, "sandbox")  # the sandbox's ledger is the one we can read
    token = tokenize(mesh, merchant).body["id"]

    class Payments(RuleBasedStateMachine):
        intents = Bundle("intents")

        def __init__(self):
            super().__init__()
            self.made: list[str] = []
            self.keys: dict[tuple[str, str], tuple[dict, set[str]]] = {}  # (path, key) -> ...

        @initialize()
        def lie(self):
            sandbox(mesh, "/_knobs", FAULTS)

        def send(self, path: str, body: dict, key: str | None = None):
            key = key or f"k-{uuid.uuid4().hex}"
            response = post(mesh, merchant, path, body, key=key)
            assert response.status in OK_OR_EXPECTED, response.body
            assert response.status != 500
            answers = self.keys.setdefault((path, key), (body, set()))[1]
            if response.status == 200:
                answers.add(response.body["id"])
                if response.body["id"].startswith("pi_") and response.body["id"] not in self.made:
                    self.made.append(response.body["id"])
            return response

        @rule(
            target=intents,
            amount=st.integers(100, 5000),
            manual=st.booleans(),
        )
        def create_and_confirm(self, amount, manual):
            body = {
                "amount": amount,
                "currency": "usd",
                "payment_method": token,
                "confirm": True,
                "capture_method": "manual" if manual else "automatic",
            }
            response = self.send("/v1/payment_intents", body)
            if response.status == 200:
                return response.body["id"]
            return multiple()  # no PSP took it: nothing to follow

        @rule(intent=intents)
        def confirm(self, intent):
            self.send(f"/v1/payment_intents/{intent}/confirm", {"payment_method": token})

        @rule(intent=intents, part=st.integers(1, 100))
        def capture(self, intent, part):
            current = self.intent(intent)
            capturable = int(current.get("amount_capturable", "0"))
            amount = max(1, capturable * part // 100) if capturable else 0
            body = {"amount_to_capture": amount} if amount else {}
            self.send(f"/v1/payment_intents/{intent}/capture", body)

        @rule(intent=consumes(intents))
        def cancel(self, intent):
            self.send(f"/v1/payment_intents/{intent}/cancel", {})

        @rule(intent=intents, amount=st.integers(1, 3000))
        def refund(self, intent, amount):
            self.send("/v1/refunds", {"payment_intent": intent, "amount": amount})

        @rule()
        def retry_a_key(self):
            if not self.keys:
                return
            (path, key), (body, _) = next(iter(reversed(self.keys.items())))
            self.send(path, body, key=key)

        def intent(self, intent_id: str) -> dict:
            return call(mesh.url(f"/v1/payment_intents/{intent_id}"), headers=merchant.auth()).body

        @invariant()
        def no_key_answers_with_two_objects(self):
            for (path, key), (_, answers) in self.keys.items():
                assert len(answers) <= 1, (path, key, answers)

        def teardown(self):
            sandbox(mesh, "/_knobs", NO_FAULTS)
            if not self.made:
                return
            settled = wait_until(lambda: self.all_settled(), timeout=60, interval=0.5)
            ledger = sandbox(mesh, "/v1/charges")["data"]
            for intent in settled:
                charges = [
                    c for c in ledger if (c["idempotency_key"] or "").startswith(f"{intent['id']}:")
                ]
                held = [
                    c
                    for c in charges
                    if c["status"] == "authorized"
                    or c["amount_captured"] - c["amount_refunded"] > 0
                ]
                assert len(held) <= 1, (intent, charges)
                psp_net = sum(c["amount_captured"] - c["amount_refunded"] for c in charges)
                ours = int(intent["amount_received"]) - int(intent["amount_refunded"])
                assert psp_net == ours, (intent, charges)
                assert int(intent["amount_refunded"]) <= int(intent["amount_received"])
                if intent["status"] == "requires_capture":
                    assert [c["status"] for c in held] == ["authorized"], (intent, charges)
            for (path, key), (body, answers) in self.keys.items():
                if answers:
                    replay = post(mesh, merchant, path, body, key=key)
                    assert replay.status == 200 and {replay.body["id"]} == answers, (key, replay)

        def all_settled(self) -> list[dict] | None:
            """The merchant's intents once no PSP operation of theirs is unsettled (a pending
            capture or void does not show in the API, so the database is asked)."""
            with psycopg.connect(infra.database_url) as db:
                [unsettled] = db.execute(
                    "SELECT (SELECT count(*) FROM gateway.payment_intents WHERE merchant_id = %s"
                    "  AND (status = 'processing' OR pending_operation IS NOT NULL))"
                    " + (SELECT count(*) FROM gateway.refunds WHERE merchant_id = %s"
                    "  AND status = 'pending')",
                    (merchant.id, merchant.id),
                ).fetchone()
            if unsettled:
                return None
            return [self.intent(i) for i in self.made]

    yield Payments
    sandbox(mesh, "/_knobs", NO_FAULTS)
    close_sandbox_breaker(mesh, merchant)


def test_the_books_match_the_psps_ledger_whatever_the_psp_does(payments_machine):
    machine = payments_machine
    machine.TestCase.settings = settings(
        max_examples=6,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    machine.TestCase().runTest()
