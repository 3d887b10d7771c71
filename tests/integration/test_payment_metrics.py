"""The payment signals tell the truth (issue 28): a PSP failing every charge opens its breaker
and the next payment goes elsewhere without calling it; a decline is a decline, not a PSP
error; every PSP call is counted, so the error ratio is computable; payments_inflight_total
counts what is being decided now and is 0 on an idle mesh."""

from __future__ import annotations

import threading

import pytest

from tests.support import cards
from tests.support.metrics import metric
from tests.support.payments import post
from tests.support.psp import breaker_state, requests_for
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def gateway(mesh, name: str, **labels: str) -> float:
    return metric(mesh.ports.http["gateway"], name, **labels)


def pay(mesh, merchant, number: str = cards.VISA):
    token = tokenize(mesh, merchant, number).body["id"]
    body = {"amount": 900, "currency": "usd", "payment_method": token, "confirm": True}
    return post(mesh, merchant, "/v1/payment_intents", body)


def test_a_psp_failing_every_charge_opens_its_breaker_and_the_next_payment_skips_it(
    mesh, merchant, knobs
):
    """Cards are still created at the sandbox (their lookups succeed); only its charges
    fail. Before, each card lookup's success reset the breaker's count of failures."""
    errors = {"psp": "sandbox", "operation": "authorize", "reason": "http_503"}
    errors_before = gateway(mesh, "psp_call_errors_total", **errors)
    calls_before = gateway(mesh, "psp_calls_total", psp="sandbox", operation="authorize")
    knobs(error_rate=1.0, operations=["authorize"])

    payments = 0
    while breaker_state(mesh, "sandbox") != 1 and payments < 10:
        pay(mesh, merchant)
        payments += 1

    assert breaker_state(mesh, "sandbox") == 1  # open
    failed = gateway(mesh, "psp_call_errors_total", **errors) - errors_before
    assert failed == 3 * payments  # every attempt, each a call
    assert gateway(mesh, "psp_calls_total", psp="sandbox", operation="authorize") == (
        calls_before + failed
    )
    charges_before = requests_for(mesh, "authorize")
    skipped = pay(mesh, merchant)
    assert skipped.body["psp"] == "stripe"
    # Not charged there (the vault made the card there ahead of any charge, as for every card).
    assert requests_for(mesh, "authorize") == charges_before


def test_a_decline_is_counted_as_a_decline_and_never_as_a_psp_error(mesh, merchant):
    declines = {"psp": "sandbox", "decline_code": "generic_decline"}
    declined_before = gateway(mesh, "payments_declined_total", **declines)
    errors_before = gateway(mesh, "psp_call_errors_total")
    calls_before = gateway(mesh, "psp_calls_total", psp="sandbox", operation="authorize")

    declined = pay(mesh, merchant, "4000000000000002")
    paid = pay(mesh, merchant)

    assert declined.body["status"] == "requires_payment_method"
    assert paid.body["status"] == "succeeded"
    assert gateway(mesh, "payments_declined_total", **declines) == declined_before + 1
    assert gateway(mesh, "psp_call_errors_total") == errors_before  # a normal day: quiet
    assert gateway(mesh, "psp_calls_total", psp="sandbox", operation="authorize") == (
        calls_before + 2
    )
    assert breaker_state(mesh, "sandbox") == 0


def test_in_flight_counts_a_charge_at_the_psp_and_not_intents_waiting_for_customers(
    mesh, merchant, knobs
):
    def in_flight() -> float:
        return gateway(mesh, "payments_inflight_total")

    # Waiting for their customers: a declined intent, one never confirmed.
    pay(mesh, merchant, "4000000000000002")
    post(mesh, merchant, "/v1/payment_intents", {"amount": 500, "currency": "usd"})
    wait_until(lambda: in_flight() == 0, timeout=30, interval=0.5)  # idle: nothing decided

    # Slower than the PSP timeout: an unknown outcome, in flight until the sweep settles it.
    knobs(latency_ms=3000, operations=["authorize"])
    slow = threading.Thread(target=pay, args=(mesh, merchant))
    slow.start()
    try:
        wait_until(
            lambda: gateway(mesh, "payments_inflight_total", status="processing") == 1,
            timeout=10,
            interval=0.2,
        )
    finally:
        slow.join(timeout=30)
    wait_until(lambda: in_flight() == 0, timeout=40, interval=0.5)  # settled by the sweep
