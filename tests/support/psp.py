"""The sandbox PSP and the gateway's breakers, as tests look at them."""

from __future__ import annotations

from tests.support.http import call
from tests.support.payments import post
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

BREAKER_RESET_SECONDS = 2.2  # GATEWAY_BREAKER_RESET_SECONDS in the tests' environment, and a bit


def sandbox(mesh, path: str, body: dict | None = None):
    url = f"http://127.0.0.1:{mesh.ports.sandbox_psp}{path}"
    return call(url, "POST" if body is not None else "GET", {}, body).body


NO_FAULTS = {
    "latency_ms": 0,
    "latency_jitter_ms": 0,
    "error_rate": 0,
    "timeout_rate": 0,
    "ambiguous_rate": 0,
    "operations": [],
    "soft_declines": {},
}


def charges_of(mesh, intent_id: str) -> list[dict]:
    """The sandbox's charges for an intent (its attempt keys start with the intent's id)."""
    every = sandbox(mesh, "/v1/charges")["data"]
    return [c for c in every if (c["idempotency_key"] or "").startswith(f"{intent_id}:")]


def refunds_at_psp(mesh, charge_id: str) -> list[int]:
    """The amounts the sandbox refunded of a charge, as its ledger (/v1/transactions) has
    them: negative, oldest first."""
    every = sandbox(mesh, "/v1/transactions")["data"]
    return [t["amount"] for t in every if t["type"] == "refund" and t["charge"] == charge_id]


def requests_for(mesh, operation: str) -> int:
    """How many requests of one operation (card, authorize, capture, …) the sandbox had."""
    return sandbox(mesh, "/_stats")["requests_by_operation"].get(operation, 0)


def breaker_state(mesh, psp: str) -> float:
    metrics = call(f"http://127.0.0.1:{mesh.ports.http['gateway']}/metrics").body
    prefix = f'psp_circuit_breaker_state{{psp="{psp}"}} '
    return next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


def wait_until_cooled_down(mesh, psp: str) -> None:
    """Waits until the PSP's open breaker has cooled down: half-open (its state read after
    the cool-down says so), the next call being its probe."""
    wait_until(lambda: breaker_state(mesh, psp) != 1, timeout=2 * BREAKER_RESET_SECONDS + 5)


def close_sandbox_breaker(mesh, merchant) -> None:
    """Waits out an open breaker's cool-down, then pays until the half-open probe closes it."""
    if breaker_state(mesh, "sandbox") == 0:
        return
    wait_until_cooled_down(mesh, "sandbox")
    token = tokenize(mesh, merchant).body["id"]
    body = {"amount": 100, "currency": "usd", "payment_method": token, "confirm": True}
    wait_until(
        lambda: (
            post(mesh, merchant, "/v1/payment_intents", body).status == 200
            and breaker_state(mesh, "sandbox") == 0
        ),
        timeout=20,
        interval=0.5,
    )
