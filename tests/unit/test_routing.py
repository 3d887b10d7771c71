"""PSP routing with fake connectors (pure logic, no network): retries under one key,
failover only on proof that nothing happened, declines and unknown outcomes that end the
route, and a circuit breaker that counts only the PSP's own failures."""

from __future__ import annotations

import asyncio

import pytest

from gateway_svc.domain.outcomes import (
    Authorization,
    CardUnknownAtPsp,
    CustomerActionRequired,
    NotProcessed,
    OutcomeUnknown,
    PspDeclined,
    PspTrouble,
)
from gateway_svc.psp.breaker import BreakerPolicy, State
from gateway_svc.psp.routing import NoPspAvailable, PspRouter, RetryPolicy, make_breaker


class FakeConnector:
    def __init__(self, name: str, outcomes: list):
        self.name = name
        self.outcomes = outcomes  # consumed one per call; the last one repeats
        self.keys: list[str] = []

    async def authorize(self, *, card, amount, currency, capture, idempotency_key, return_url=""):
        self.keys.append(idempotency_key)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def router(*connectors: FakeConnector, fail_max: int | None = None) -> PspRouter:
    policy = BreakerPolicy(open_seconds=60)  # the shipped defaults, but for the cool-down
    if fail_max is not None:
        policy = BreakerPolicy(min_calls=fail_max, window_calls=max(20, fail_max))
    return PspRouter(
        {c.name: c for c in connectors},
        {c.name: make_breaker(f"unit-{c.name}-{id(c)}", policy) for c in connectors},
        RetryPolicy(
            attempts=3, deadline_seconds=2, backoff_seconds=0.001, max_backoff_seconds=0.01
        ),
    )


def authorize(psps: PspRouter, route: list[str], recorded: list | None = None):
    async def card_for(psp: str) -> str:
        return f"card@{psp}"

    async def on_attempt(psp: str, pending_key: str) -> None:
        if recorded is not None:
            recorded.append((psp, pending_key))

    async def reprovision(psp: str, unknown_reference: str) -> str:
        return f"again@{psp}"

    return asyncio.run(
        psps.authorize(
            route,
            card_for,
            amount=100,
            currency="usd",
            capture=True,
            attempt_key="pi_1:abc",
            on_attempt=on_attempt,
            reprovision=reprovision,
        )
    )


def test_a_transient_failure_is_retried_with_the_same_idempotency_key():
    sandbox = FakeConnector("sandbox", [NotProcessed("http_503"), Authorization("ch_1", True)])

    psp, authorization = authorize(router(sandbox), ["sandbox"])

    assert (psp, authorization.reference) == ("sandbox", "ch_1")
    assert sandbox.keys == ["pi_1:abc:sandbox", "pi_1:abc:sandbox"]


def test_a_psp_that_provably_did_nothing_on_every_retry_fails_over_to_the_next():
    sandbox = FakeConnector("sandbox", [NotProcessed("http_503")])
    stripe = FakeConnector("stripe", [Authorization("pi_s", True)])

    psp, _ = authorize(router(sandbox, stripe), ["sandbox", "stripe"])

    assert psp == "stripe"
    assert len(sandbox.keys) == 3
    assert stripe.keys == ["pi_1:abc:stripe"]


def test_a_decline_is_final_no_retry_no_failover():
    sandbox = FakeConnector("sandbox", [PspDeclined("generic_decline", "declined", "hard")])
    stripe = FakeConnector("stripe", [Authorization("pi_s", True)])

    with pytest.raises(PspDeclined):
        authorize(router(sandbox, stripe), ["sandbox", "stripe"])

    assert len(sandbox.keys) == 1
    assert stripe.keys == []


def test_an_open_breaker_skips_its_psp_without_a_call():
    sandbox = FakeConnector("sandbox", [NotProcessed("http_500")])
    stripe = FakeConnector("stripe", [Authorization("pi_s", True)])
    psps = router(sandbox, stripe, fail_max=3)

    authorize(psps, ["sandbox", "stripe"])  # 3 failures: the breaker opens
    calls = len(sandbox.keys)
    psp, _ = authorize(psps, ["sandbox", "stripe"])

    assert psps.breakers["sandbox"].state is State.OPEN
    assert psp == "stripe"
    assert len(sandbox.keys) == calls


def test_a_psp_that_needs_the_customer_ends_the_route_no_retry_no_failover():
    waiting = CustomerActionRequired("sandbox", "ch_1", "http://psp/3ds/ch_1")
    sandbox = FakeConnector("sandbox", [waiting])
    stripe = FakeConnector("stripe", [Authorization("pi_s", True)])

    with pytest.raises(CustomerActionRequired) as raised:
        authorize(router(sandbox, stripe), ["sandbox", "stripe"])

    assert (raised.value.reference, raised.value.url) == ("ch_1", "http://psp/3ds/ch_1")
    assert sandbox.keys == ["pi_1:abc:sandbox"]
    assert stripe.keys == []


def test_a_card_the_psp_lost_is_made_again_once_and_charged_under_its_own_recorded_key():
    sandbox = FakeConnector("sandbox", [CardUnknownAtPsp("sandbox"), Authorization("ch_1", True)])
    recorded: list = []

    psp, authorization = authorize(router(sandbox), ["sandbox"], recorded)

    assert (psp, authorization.reference) == ("sandbox", "ch_1")
    assert sandbox.keys == ["pi_1:abc:sandbox", "pi_1:abc:reprovisioned:sandbox"]
    # Where each charge goes is recorded before it is sent (the sweep looks there).
    assert recorded == [("sandbox", "pi_1:abc"), ("sandbox", "pi_1:abc:reprovisioned")]


def test_a_psp_that_still_does_not_know_the_card_it_just_made_is_failed_over_not_declined():
    sandbox = FakeConnector("sandbox", [CardUnknownAtPsp("sandbox")])
    stripe = FakeConnector("stripe", [Authorization("pi_s", True)])
    psps = router(sandbox, stripe)

    psp, _ = authorize(psps, ["sandbox", "stripe"])

    assert psp == "stripe"
    assert len(sandbox.keys) == 2  # never made a third time
    assert psps.breakers["sandbox"].state is State.CLOSED  # it answered every time


def test_nothing_available_says_so():
    sandbox = FakeConnector("sandbox", [NotProcessed("connection refused")])

    with pytest.raises(NoPspAvailable):
        authorize(router(sandbox), ["sandbox"])


def test_a_timeout_is_an_unknown_outcome_and_never_fails_over():
    sandbox = FakeConnector("sandbox", [OutcomeUnknown("timeout")])
    stripe = FakeConnector("stripe", [Authorization("pi_s", True)])

    with pytest.raises(OutcomeUnknown):
        authorize(router(sandbox, stripe), ["sandbox", "stripe"])

    assert sandbox.keys == ["pi_1:abc:sandbox"] * 3  # asked again under the same key
    assert stripe.keys == []


def test_a_retry_that_finds_the_first_attempts_answer_settles_an_unknown_outcome():
    sandbox = FakeConnector("sandbox", [OutcomeUnknown("timeout"), Authorization("ch_1", True)])

    psp, authorization = authorize(router(sandbox), ["sandbox"])

    assert (psp, authorization.reference) == ("sandbox", "ch_1")


def test_an_unknown_outcome_stays_unknown_when_later_attempts_prove_nothing():
    sandbox = FakeConnector(
        "sandbox", [OutcomeUnknown("timeout"), NotProcessed("http_503"), NotProcessed("refused")]
    )
    stripe = FakeConnector("stripe", [Authorization("pi_s", True)])

    with pytest.raises(OutcomeUnknown):
        authorize(router(sandbox, stripe), ["sandbox", "stripe"])
    assert stripe.keys == []


def test_an_unknown_outcome_that_trips_the_breaker_is_still_unknown():
    sandbox = FakeConnector("sandbox", [OutcomeUnknown("timeout")])
    stripe = FakeConnector("stripe", [Authorization("pi_s", True)])

    with pytest.raises(OutcomeUnknown):
        authorize(router(sandbox, stripe, fail_max=2), ["sandbox", "stripe"])
    assert stripe.keys == []


@pytest.mark.parametrize(
    "not_the_psps_fault",
    [
        PspDeclined("generic_decline", "declined", "hard"),
        CustomerActionRequired("sandbox", "ch_1", "http://psp/3ds/ch_1"),  # 3-D Secure cards
        NotProcessed("vault: card not provisioned", psp_at_fault=False),
        OutcomeUnknown("timeout while our loop was busy", psp_at_fault=False),
    ],
)
def test_the_breaker_counts_only_the_psps_own_failures(not_the_psps_fault):
    sandbox = FakeConnector("sandbox", [not_the_psps_fault])
    psps = router(sandbox, fail_max=2)

    for _ in range(5):
        with pytest.raises((PspDeclined, CustomerActionRequired, PspTrouble, NoPspAvailable)):
            authorize(psps, ["sandbox"])

    assert psps.breakers["sandbox"].state is State.CLOSED


def test_a_dead_psp_opens_its_breaker_under_the_shipped_settings_despite_card_lookups():
    """Issue 28: each payment's card lookup succeeded between its three failing attempts,
    and the consecutive count (5) never got there: 21 sandbox 503s left the breaker closed.
    Under the shipped settings (ratio 0.5, min 10 calls) the authorize window opens it."""
    sandbox = FakeConnector("sandbox", [NotProcessed("http_503")])
    stripe = FakeConnector("stripe", [Authorization("pi_s", True)])
    psps = router(sandbox, stripe)

    for _ in range(7):  # 21 failed attempts at the sandbox, each payment paid at stripe
        psp, _ = authorize(psps, ["sandbox", "stripe"])
        assert psp == "stripe"
        psps.observe_card("sandbox", None)  # the vault created a card there, fine
    calls = len(sandbox.keys)
    psp, _ = authorize(psps, ["sandbox", "stripe"])

    assert psps.breakers["sandbox"].state is State.OPEN
    assert (psp, len(sandbox.keys)) == ("stripe", calls)  # straight to stripe


def test_successes_of_another_operation_do_not_mask_failing_charges():
    sandbox = FakeConnector("sandbox", [NotProcessed("http_503")])
    psps = router(sandbox)
    breaker = psps.breakers["sandbox"]

    for _ in range(4):
        for _ in range(10):
            psps.observe_card("sandbox", None)
        with pytest.raises(NoPspAvailable):
            authorize(psps, ["sandbox"])
        if breaker.state is State.OPEN:
            break

    assert breaker.state is State.OPEN
    assert len(sandbox.keys) == 10  # the 10th failed charge opened it, 40 card successes or not
