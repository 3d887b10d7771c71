"""The payment use cases on the in-memory repository and scripted PSPs: the protocol's
decisions (what is recorded, what is left for the sweep, what is released) without a network.
The integration tests prove the same against the real PSP simulator and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError

from gateway_svc.domain.changes import KeyRef
from gateway_svc.domain.models import NewIntent
from gateway_svc.domain.outcomes import (
    AuthenticationFailed,
    Authorization,
    CardNotProvisioned,
    CardUnknownAtPsp,
    CustomerActionRequired,
    NotProcessed,
    OutcomeUnknown,
    PspDeclined,
)
from gateway_svc.domain.status import IntentStatus
from gateway_svc.memory_repository import InMemoryPaymentRepository
from gateway_svc.payments import authorize, cancel, capture, recovery
from gateway_svc.payments.context import OutcomePending, Payments, for_keyless
from gateway_svc.psp.breaker import BreakerPolicy
from gateway_svc.psp.card_tokens import CardTokens
from gateway_svc.psp.routing import PspRouter, RetryPolicy, make_breaker
from paymesh.platform.callers import Merchant
from paymesh.platform.problems import FailedPrecondition, InvalidArgument, NotFound

MERCHANT = Merchant("acct_unit", False)


class ScriptedPsp:
    """A PSP that answers from a script, one answer per call (the last one repeats), and
    remembers every key it was called with."""

    def __init__(self, name: str, authorize=(), capture=(), found=None, retrieve=()):
        self.name = name
        self.scripts = {
            "authorize": list(authorize),
            "capture": list(capture),
            "retrieve": list(retrieve),
        }
        self.found = found
        self.calls: list[tuple[str, str]] = []
        self.voided: list[str] = []

    def _next(self, operation: str):
        script = self.scripts[operation]
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def authorize(self, *, card, amount, currency, capture, idempotency_key, return_url=""):
        self.calls.append(("authorize", idempotency_key))
        return self._next("authorize")

    async def retrieve(self, reference):
        self.calls.append(("retrieve", reference))
        return self._next("retrieve")

    async def capture(self, reference, amount, idempotency_key):
        self.calls.append(("capture", idempotency_key))
        answer = self._next("capture")
        return amount if answer is True else answer

    async def void(self, reference, idempotency_key):
        self.voided.append(reference)

    async def refund(self, reference, amount, idempotency_key):
        return "rf_1"

    async def find(self, idempotency_key):
        self.calls.append(("find", idempotency_key))
        if isinstance(self.found, Exception):
            raise self.found
        return self.found


class Vault:
    async def psp_token(self, merchant, payment_method, psp, reason):
        return f"card@{psp}"


class ReprovisioningVault(Vault):
    """Makes a card again where a PSP lost it; with `refused`, every PSP asks for a CVC."""

    def __init__(self, refused: bool = False):
        self.refused = refused
        self.reprovisioned: list[tuple[str, str]] = []

    async def reprovision(self, merchant, payment_method, psp, unknown_reference, reason):
        self.reprovisioned.append((psp, unknown_reference))
        if self.refused:
            raise CardNotProvisioned(psp, "invalid_request_error")
        return f"again@{psp}"


def payments_with(*psps: ScriptedPsp) -> tuple[Payments, InMemoryPaymentRepository]:
    repository = InMemoryPaymentRepository()
    repository.routes[MERCHANT.id] = [p.name for p in psps]
    router = PspRouter(
        {p.name: p for p in psps},
        {p.name: make_breaker(f"unit-{p.name}-{id(p)}", BreakerPolicy()) for p in psps},
        RetryPolicy(attempts=2, deadline_seconds=1, backoff_seconds=0.001),
    )
    return Payments(repository, router, CardTokens(Vault(), repository)), repository


def create(payments: Payments, key: KeyRef | None = None, manual: bool = False, **fields):
    new = NewIntent(
        1000, "usd", "pm_1", "manual" if manual else "automatic", True, "", {}, **fields
    )
    return asyncio.run(authorize.create(payments, MERCHANT, new, key))


# --- 3-D Secure: the PSP needs the customer ------------------------------------------------

PAGE = "https://psp.example/3ds/ch_1"


def waiting(psp: str = "sandbox") -> CustomerActionRequired:
    return CustomerActionRequired(psp, "ch_1", PAGE)


def test_a_psp_that_needs_the_customer_leaves_the_intent_waiting_never_captured_nor_swept():
    sandbox = ScriptedPsp("sandbox", authorize=[waiting()])
    stripe = ScriptedPsp("stripe", authorize=[Authorization("pi_s", True)])
    payments, repository = payments_with(sandbox, stripe)

    intent = create(payments, return_url="https://shop.example/back")
    swept = asyncio.run(recovery.recover(payments, older_than_seconds=0))  # every pending one

    assert (intent.status, intent.psp, intent.psp_reference) == (
        "requires_action",
        "sandbox",
        "ch_1",
    )
    assert intent.pending_operation is None and swept == 0
    assert intent.next_action == {
        "type": "redirect_to_url",
        "redirect_to_url": {"url": PAGE, "return_url": "https://shop.example/back"},
    }
    assert stripe.calls == []  # an answer: no failover
    with pytest.raises(FailedPrecondition) as refused:
        asyncio.run(capture.capture(payments, MERCHANT, intent.id, 0, None))
    assert refused.value.reason == "payment_intent_unexpected_state"
    assert [c[0] for c in sandbox.calls] == ["authorize"]
    assert [e.type for e in repository.events if e.aggregate_id == intent.id] == [
        "payment_intent.created",
        "payment_intent.requires_action",
    ]


@pytest.mark.parametrize(
    ("ended", "status", "received", "capturable"),
    [
        (Authorization("ch_1", True), "succeeded", 1000, 0),
        (Authorization("ch_1", False), "requires_capture", 0, 1000),
    ],
)
def test_a_later_confirm_asks_the_psp_how_it_ended_and_never_authorizes_again(
    ended, status, received, capturable
):
    sandbox = ScriptedPsp("sandbox", authorize=[waiting()], retrieve=[waiting(), ended])
    payments, repository = payments_with(sandbox)
    intent = create(payments)

    still = asyncio.run(authorize.confirm(payments, MERCHANT, intent.id, "", None))
    done = asyncio.run(authorize.confirm(payments, MERCHANT, intent.id, "", None))

    assert (still.status, still.next_action["redirect_to_url"]["url"]) == ("requires_action", PAGE)
    assert (done.status, done.amount_received, done.amount_capturable) == (
        status,
        received,
        capturable,
    )
    assert done.next_action is None
    assert (
        sandbox.calls
        == [("authorize", f"{intent.attempt_key}:sandbox")] + [("retrieve", "ch_1")] * 2
    )


def test_a_confirm_waiting_for_its_customer_cannot_change_what_the_psp_was_given():
    sandbox = ScriptedPsp("sandbox", authorize=[waiting()], retrieve=[Authorization("ch_1", True)])
    payments, _ = payments_with(sandbox)
    intent = create(payments, return_url="https://shop.example/back")

    for change in ({"payment_method": "pm_2"}, {"return_url": "https://shop.example/other"}):
        with pytest.raises(FailedPrecondition) as refused:
            asyncio.run(
                authorize.confirm(
                    payments,
                    MERCHANT,
                    intent.id,
                    change.get("payment_method", ""),
                    None,
                    change.get("return_url", ""),
                )
            )
        assert refused.value.reason == "payment_intent_unexpected_state"
        assert next(iter(change)) in refused.value.message
    assert [c[0] for c in sandbox.calls] == ["authorize"]  # the PSP was not asked


def test_a_failed_authentication_needs_a_payment_method_again():
    sandbox = ScriptedPsp("sandbox", authorize=[waiting()], retrieve=[AuthenticationFailed()])
    payments, _ = payments_with(sandbox)
    intent = create(payments)

    failed = asyncio.run(authorize.confirm(payments, MERCHANT, intent.id, "", None))

    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error["code"] == "payment_intent_authentication_failure"
    assert failed.last_payment_error["type"] == "soft"


def test_a_canceled_intent_waiting_for_its_customer_is_voided_at_the_psp():
    sandbox = ScriptedPsp("sandbox", authorize=[waiting()])
    payments, _ = payments_with(sandbox)
    intent = create(payments)

    canceled = asyncio.run(cancel.cancel(payments, MERCHANT, intent.id, None))

    assert canceled.status == "canceled"
    assert sandbox.voided == ["ch_1"]


def unconfirmed_intent(payments: Payments):
    new = NewIntent(1000, "usd", "pm_1", "automatic", False, "", {})
    return asyncio.run(authorize.create(payments, MERCHANT, new, None))


def test_a_cancel_keeps_its_stripe_cancellation_reason_on_either_path():
    """Stripe's `cancellation_reason`: kept on an intent canceled in one step, and on one
    whose authorization is voided at the PSP first (recorded with the void's reservation)."""
    sandbox = ScriptedPsp("sandbox", authorize=[waiting()])
    payments, _ = payments_with(sandbox)
    waiting_one, unconfirmed = create(payments), unconfirmed_intent(payments)

    plain = asyncio.run(cancel.cancel(payments, MERCHANT, unconfirmed.id, None, "abandoned"))
    voided = asyncio.run(cancel.cancel(payments, MERCHANT, waiting_one.id, None, "duplicate"))

    assert (plain.status, plain.cancellation_reason) == ("canceled", "abandoned")
    assert (voided.status, voided.cancellation_reason) == ("canceled", "duplicate")
    assert sandbox.voided == ["ch_1"]


def test_a_cancellation_reason_stripe_does_not_take_is_a_400_naming_it():
    payments, _ = payments_with(ScriptedPsp("sandbox"))
    intent = unconfirmed_intent(payments)

    with pytest.raises(InvalidArgument) as refused:
        asyncio.run(cancel.cancel(payments, MERCHANT, intent.id, None, "changed_my_mind"))

    assert [(v.field, v.reason) for v in refused.value.violations] == [
        ("cancellation_reason", "invalid_reason")
    ]


def test_the_sweep_records_an_attempt_the_psp_holds_for_its_customer_as_requires_action():
    sandbox = ScriptedPsp("sandbox", authorize=[OutcomeUnknown("timeout")], found=waiting())
    payments, repository = payments_with(sandbox)
    intent = create(payments)
    repository.intents[intent.id] = intent.replace(
        pending_since=datetime.now(UTC) - timedelta(minutes=5)
    )

    asyncio.run(recovery.recover(payments, older_than_seconds=60))

    settled = repository.intents[intent.id]
    assert (settled.status, settled.psp_reference, settled.pending_operation) == (
        "requires_action",
        "ch_1",
        None,
    )


def test_an_unknown_outcome_is_answered_as_processing_and_never_failed_over():
    sandbox = ScriptedPsp("sandbox", authorize=[OutcomeUnknown("timeout")])
    stripe = ScriptedPsp("stripe", authorize=[Authorization("pi_s", True)])
    payments, repository = payments_with(sandbox, stripe)
    key = repository.open_key(MERCHANT, "order-1")

    intent = create(payments, key)

    assert (intent.status, intent.psp, intent.pending_operation) == (
        IntentStatus.PROCESSING,
        "sandbox",
        "authorize",
    )
    assert stripe.calls == []
    assert repository.keys[(MERCHANT.id, False, "order-1")].state == "done"


def test_the_sweep_adopts_what_the_psp_found_and_a_retried_key_sees_it():
    sandbox = ScriptedPsp(
        "sandbox", authorize=[OutcomeUnknown("timeout")], found=Authorization("ch_1", True)
    )
    payments, repository = payments_with(sandbox)
    intent = create(payments)
    repository.intents[intent.id] = intent.replace(
        pending_since=datetime.now(UTC) - timedelta(minutes=5)
    )

    asyncio.run(recovery.recover(payments, older_than_seconds=60))

    settled = repository.intents[intent.id]
    assert (settled.status, settled.psp_reference, settled.amount_received) == (
        IntentStatus.SUCCEEDED,
        "ch_1",
        1000,
    )
    assert [a.actor for a in repository.audits if a.action == "confirm"] == ["worker"]


def test_a_late_authorization_for_a_canceled_intent_is_voided_not_ignored():
    sandbox = ScriptedPsp("sandbox", authorize=[Authorization("ch_late", False)])
    payments, repository = payments_with(sandbox)
    intent = create(payments, manual=True)  # authorized: requires_capture
    attempt = intent.replace(status=IntentStatus.PROCESSING)
    repository.intents[intent.id] = intent.replace(status=IntentStatus.CANCELED, psp_reference=None)

    current = asyncio.run(
        authorize.settle_authorization(
            payments, attempt, "sandbox", Authorization("ch_late", False), "api"
        )
    )

    assert current.status == IntentStatus.CANCELED
    assert sandbox.voided == ["ch_late"]
    assert [a.result for a in repository.audits if a.action == "late_authorization"] == ["released"]


def test_a_capture_records_what_the_psp_captured_and_an_unknown_one_stays_reserved():
    sandbox = ScriptedPsp(
        "sandbox", authorize=[Authorization("ch_1", False)], capture=[550, OutcomeUnknown("t")]
    )
    payments, repository = payments_with(sandbox)
    first = create(payments, manual=True)
    second = create(payments, manual=True)

    captured = asyncio.run(capture.capture(payments, MERCHANT, first.id, 600, None))
    sandbox.scripts["capture"] = [OutcomeUnknown("timeout")]
    with pytest.raises(OutcomePending):
        asyncio.run(capture.capture(payments, MERCHANT, second.id, 600, None))

    assert (captured.status, captured.amount_received) == (IntentStatus.SUCCEEDED, 550)
    pending = repository.intents[second.id]
    assert (pending.status, pending.pending_operation) == (IntentStatus.REQUIRES_CAPTURE, "capture")


def test_nothing_processed_anywhere_gives_the_intent_back_uncharged():
    sandbox = ScriptedPsp("sandbox", authorize=[NotProcessed("http_503")])
    payments, repository = payments_with(sandbox)

    with pytest.raises(Exception) as raised:
        create(payments)

    assert getattr(raised.value, "reason", "") == "psp_unavailable"
    assert raised.value.retry_after_seconds > 0  # Retry-After: never a 200 decline
    [intent] = repository.intents.values()
    assert (intent.status, intent.pending_operation) == (IntentStatus.REQUIRES_CONFIRMATION, None)


def test_a_card_the_vault_could_not_provision_at_first_is_asked_for_again_not_replayed():
    class FlakyVault:
        def __init__(self):
            self.calls = 0

        async def psp_token(self, merchant, payment_method, psp, reason):
            self.calls += 1
            if self.calls == 1:
                raise NotProcessed(f"{psp}: card not provisioned")
            return f"card@{psp}"

    sandbox = ScriptedPsp("sandbox", authorize=[Authorization("ch_1", True)])
    payments, repository = payments_with(sandbox)
    flaky = FlakyVault()
    payments.card_tokens = CardTokens(flaky, repository)

    intent = create(payments)

    assert (intent.status, intent.psp) == (IntentStatus.SUCCEEDED, "sandbox")
    assert flaky.calls == 2


def test_a_remembered_card_revoked_since_is_declined_by_the_vault_and_never_sent_to_the_psp():
    class DetachingVault:
        """Knows the card until it is detached."""

        detached = False

        async def psp_token(self, merchant, payment_method, psp, reason):
            if self.detached:
                raise PspDeclined("payment_method_detached", "detached", "hard")
            return f"card@{psp}"

    sandbox = ScriptedPsp("sandbox", authorize=[Authorization("ch_1", True)])
    payments, repository = payments_with(sandbox)
    vault = DetachingVault()
    payments.card_tokens = CardTokens(vault, repository)
    assert create(payments).status == IntentStatus.SUCCEEDED  # the card is remembered now
    vault.detached = True
    asyncio.run(repository.revoke_payment_method(MERCHANT, "pm_1"))

    declined = create(payments)

    assert declined.status == IntentStatus.REQUIRES_PAYMENT_METHOD
    assert declined.last_payment_error["decline_code"] == "payment_method_detached"
    assert [call for call in sandbox.calls if call[0] == "authorize"] == [sandbox.calls[0]]


def test_a_card_the_psp_lost_is_provisioned_again_and_charged_once_under_a_key_of_its_own():
    sandbox = ScriptedPsp(
        "sandbox", authorize=[CardUnknownAtPsp("sandbox"), Authorization("ch_1", True)]
    )
    payments, repository = payments_with(sandbox)
    vault = ReprovisioningVault()
    payments.card_tokens = CardTokens(vault, repository)

    intent = create(payments)

    assert (intent.status, intent.psp) == (IntentStatus.SUCCEEDED, "sandbox")
    assert vault.reprovisioned == [("sandbox", "card@sandbox")]
    attempt = repository.intents[intent.id].attempt_key
    assert sandbox.calls == [
        ("authorize", f"{attempt}:sandbox"),
        ("authorize", f"{attempt}:reprovisioned:sandbox"),
    ]


def test_a_card_no_psp_holds_nor_would_take_again_is_not_a_decline():
    sandbox = ScriptedPsp("sandbox", authorize=[CardUnknownAtPsp("sandbox")])
    stripe = ScriptedPsp("stripe", authorize=[CardUnknownAtPsp("stripe")])
    payments, repository = payments_with(sandbox, stripe)
    vault = ReprovisioningVault(refused=True)
    payments.card_tokens = CardTokens(vault, repository)

    intent = create(payments)

    assert intent.status == IntentStatus.REQUIRES_PAYMENT_METHOD
    assert intent.last_payment_error["code"] == "card_reprovision_failed"
    assert intent.last_payment_error["type"] == "soft"
    assert intent.psp == "stripe"  # the PSP that answered last
    assert [psp for psp, _ in vault.reprovisioned] == ["sandbox", "stripe"]  # each once
    assert [a.result for a in repository.audits if a.action == "confirm"] == [
        "card_reprovision_failed"
    ]


def test_a_decline_after_a_failover_names_the_psp_that_declined():
    class DecliningAtStripe(Vault):
        async def psp_token(self, merchant, payment_method, psp, reason):
            if psp == "stripe":  # localstripe declined the card as it was created
                raise PspDeclined("card_velocity_exceeded", "declined", "hard", psp="stripe")
            return f"card@{psp}"

    sandbox = ScriptedPsp("sandbox", authorize=[NotProcessed("http_503")])
    payments, repository = payments_with(sandbox, ScriptedPsp("stripe"))
    payments.card_tokens = CardTokens(DecliningAtStripe(), repository)

    intent = create(payments)

    assert intent.status == IntentStatus.REQUIRES_PAYMENT_METHOD
    assert intent.psp == "stripe"
    assert intent.last_payment_error["decline_code"] == "card_velocity_exceeded"


def test_the_sweep_asks_about_the_charge_made_after_reprovisioning_not_the_first_key():
    sandbox = ScriptedPsp(
        "sandbox",
        authorize=[CardUnknownAtPsp("sandbox"), OutcomeUnknown("timeout")],
        found=Authorization("ch_1", True),
    )
    payments, repository = payments_with(sandbox)
    payments.card_tokens = CardTokens(ReprovisioningVault(), repository)
    intent = create(payments)
    attempt = repository.intents[intent.id].attempt_key
    assert repository.intents[intent.id].pending_key == f"{attempt}:reprovisioned"
    repository.intents[intent.id] = repository.intents[intent.id].replace(
        pending_since=datetime.now(UTC) - timedelta(minutes=5)
    )

    asyncio.run(recovery.recover(payments, older_than_seconds=60))

    assert repository.intents[intent.id].status == IntentStatus.SUCCEEDED
    assert sandbox.calls[-1] == ("find", f"{attempt}:reprovisioned:sandbox")


def test_a_keyless_request_hears_where_its_outcome_will_show_not_to_retry_under_a_key():
    lost = for_keyless(OutcomePending("capture", "pi_abc"), "pi_abc")
    cut = for_keyless(OperationalError("UPDATE", {}, ConnectionResetError()), "pi_abc")
    missing = NotFound("no such payment_intent", reason="resource_missing")

    for told, reason in ((lost, "psp_outcome_unknown"), (cut, "database_unavailable")):
        assert told.reason == reason
        assert told.metadata == {"payment_intent": "pi_abc"}
        assert "GET /v1/payment_intents/pi_abc" in told.message and "event" in told.message
        assert "idempotency" not in told.message.lower()
    assert for_keyless(missing, "pi_abc") is missing
    assert "Idempotency-Key" in OutcomePending("capture", "pi_abc").message
