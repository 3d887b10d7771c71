"""What a PSP does to payments, as a hypothesis state machine over the session's real mesh:
a merchant pays through Envoy while the sandbox PSP declines, fails (an outage), forgets the
cards it holds, asks for the customer (3-D Secure) or loses its answer. After every step, for
every payment made so far:

- the status the merchant sees agrees with the PSP's own ledger (`GET /v1/charges`): paid once
  when succeeded, held once when waiting for its customer, nothing held otherwise;
- no decline is reported that the PSP did not make (the sandbox's `GET /_declines`);
- no breaker opens on a customer's card: a decline, a forgotten card or a customer to ask
  leaves the sandbox's breaker closed (an outage or a lost answer may open it; the machine
  closes it again before it goes on)."""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.support import cards
from tests.support.envelope import reason_of
from tests.support.fuzzing import examples
from tests.support.http import call
from tests.support.mesh import create_merchant
from tests.support.payments import post, route
from tests.support.psp import NO_FAULTS, breaker_state, close_sandbox_breaker, sandbox
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

CARDS = {
    "pays": cards.VISA,
    "declined_hard": cards.VISA_DECLINE,
    "declined_soft": cards.VISA_INSUFFICIENT_FUNDS,
    "asks_the_customer": cards.THREE_D_SECURE,
}
_amounts = itertools.count(31_001)


class PspBehaviours(RuleBasedStateMachine):
    mesh = None
    infra = None

    @initialize()
    def a_merchant_routed_to_the_sandbox(self):
        self.merchant = create_merchant(self.infra, f"behaviours-{uuid.uuid4().hex[:6]}")
        route(self.infra, self.merchant, "sandbox")
        self.intents: dict[str, int] = {}  # intent id -> amount
        self.saved: list[str] = []  # payment methods charged before
        self.waiting_for_customer: list[str] = []

    def _pay(self, payment_method: str) -> dict | None:
        """Pays; the intent, or None for a 503 (nothing was made, or made and told)."""
        amount = next(_amounts)
        body = {"amount": amount, "currency": "usd", "payment_method": payment_method}
        response = post(
            self.mesh,
            self.merchant,
            "/v1/payment_intents",
            {**body, "confirm": True, "return_url": "https://shop.example/back"},
            key=f"behaviour-{uuid.uuid4().hex}",
        )
        if response.status == 503:
            assert reason_of(response) in ("psp_unavailable", "psp_outcome_unknown"), response.body
            return None
        assert response.status == 200, response.body
        self.intents[response.body["id"]] = amount
        return response.body

    @rule(kind=st.sampled_from(sorted(CARDS)))
    def a_customer_pays(self, kind):
        payment_method = tokenize(self.mesh, self.merchant, CARDS[kind]).body["id"]
        intent = self._pay(payment_method)
        assert intent is not None
        expected = {
            "pays": "succeeded",
            "declined_hard": "requires_payment_method",
            "declined_soft": "requires_payment_method",
            "asks_the_customer": "requires_action",
        }[kind]
        assert intent["status"] == expected, intent
        if kind == "pays":
            self.saved.append(payment_method)
        if kind == "asks_the_customer":
            self.waiting_for_customer.append(intent["id"])
        self._breaker_closed()

    @rule(result=st.sampled_from(["succeed", "fail"]))
    def a_customer_answers_the_psp(self, result):
        if not self.waiting_for_customer:
            return
        intent_id = self.waiting_for_customer.pop(0)
        [charge] = self._ledger(intent_id)
        sandbox(self.mesh, f"/3ds/{charge['id']}/complete", {"result": result})
        confirmed = post(self.mesh, self.merchant, f"/v1/payment_intents/{intent_id}/confirm")
        assert confirmed.status == 200, confirmed.body
        expected = "succeeded" if result == "succeed" else "requires_payment_method"
        assert confirmed.body["status"] == expected, confirmed.body
        self._breaker_closed()

    @rule()
    def the_psp_forgets_every_card(self):
        sandbox(self.mesh, "/_forget_cards", {})
        if not self.saved:
            return
        intent = self._pay(self.saved[-1])
        assert intent is not None and intent["status"] == "succeeded", intent
        self._breaker_closed()

    @rule()
    def the_psp_is_down(self):
        sandbox(self.mesh, "/_knobs", {**NO_FAULTS, "error_rate": 1, "operations": ["authorize"]})
        try:
            payment_method = tokenize(self.mesh, self.merchant).body["id"]
            assert self._pay(payment_method) is None  # 503 psp_unavailable, never a decline
        finally:
            sandbox(self.mesh, "/_knobs", NO_FAULTS)
            close_sandbox_breaker(self.mesh, self.merchant)

    @rule()
    def the_psps_answer_is_lost(self):
        sandbox(
            self.mesh, "/_knobs", {**NO_FAULTS, "ambiguous_rate": 1, "operations": ["authorize"]}
        )
        try:
            payment_method = tokenize(self.mesh, self.merchant).body["id"]
            intent = self._pay(payment_method)
            assert intent is None or intent["status"] in ("processing", "succeeded"), intent
        finally:
            sandbox(self.mesh, "/_knobs", NO_FAULTS)
            close_sandbox_breaker(self.mesh, self.merchant)

    def _breaker_closed(self):
        assert breaker_state(self.mesh, "sandbox") == 0, "a customer's card opened the breaker"

    def _ledger(self, intent_id: str) -> list[dict]:
        charges = sandbox(self.mesh, "/v1/charges")["data"]
        return [c for c in charges if (c.get("idempotency_key") or "").startswith(f"{intent_id}:")]

    def _shown(self, intent_id: str) -> dict:
        return call(
            self.mesh.url(f"/v1/payment_intents/{intent_id}"), headers=self.merchant.auth()
        ).body

    @invariant()
    def what_merchants_see_is_what_the_psp_did(self):
        if not hasattr(self, "intents"):
            return
        declines = sandbox(self.mesh, "/_declines")["data"]
        for intent_id, amount in self.intents.items():
            shown = self._shown(intent_id)
            ledger = self._ledger(intent_id)
            held = [c for c in ledger if c["status"] in ("captured", "authorized")]
            status = shown["status"]
            if status == "processing":
                continue  # the sweep asks the PSP; settled at the end
            if status == "succeeded":
                assert [c["amount_captured"] for c in held] == [amount], (shown, ledger)
            elif status == "requires_action":
                assert held == [] and [c["status"] for c in ledger] == ["requires_action"]
            else:
                assert held == [], (shown, ledger)
            error = shown.get("last_payment_error") or {}
            if error.get("code") == "card_declined":
                made = [
                    d
                    for d in declines
                    if (d.get("idempotency_key") or "").startswith(f"{intent_id}:")
                ]
                assert [d["decline_code"] for d in made] == [error["decline_code"]], (shown, made)

    def teardown(self):
        if not hasattr(self, "intents"):
            return
        for intent_id in self.intents:
            wait_until(lambda i=intent_id: self._shown(i)["status"] != "processing", timeout=60)
        self.what_merchants_see_is_what_the_psp_did()


def test_psp_behaviours_never_become_a_customers_decline(mesh, infra):
    PspBehaviours.mesh = mesh
    PspBehaviours.infra = infra
    run = settings(
        max_examples=examples(4),
        stateful_step_count=6,
        deadline=None,
        derandomize=True,  # the same sequences on every run; PAYMESH_FUZZ_EXAMPLES widens
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )(PspBehaviours)
    run.TestCase().runTest()
