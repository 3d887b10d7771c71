"""What a PSP's own report (a webhook: a capture, a refund made at the PSP, how a customer's
authentication ended) may do to a payment, as plain decisions (a dispute's:
gateway_svc.domain.disputes). Conservative by design: an event is applied only when the
intent's state proves it can be; otherwise it is sent again later (an operation of paymesh is
in flight, or an earlier event has not arrived yet) or recorded and ignored (it contradicts
what paymesh knows: a human looks at it). Every move is one the transition table allows, so
no event, however late or repeated, moves an intent backwards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway_svc.domain.models import PaymentIntent, Refund
from gateway_svc.domain.outcomes import AuthenticationFailed
from gateway_svc.domain.status import Action, IntentStatus, RefundStatus, sources


@dataclass(frozen=True)
class PspEvent:
    """One PSP event, as the webhook service read it. `kind`: capture | refund | dispute |
    authorized | failed (how a customer's authentication ended); `reference`: the PSP's
    refund or dispute id; `amount`: captured, refunded, disputed or authorized."""

    psp: str
    event_id: str
    event_type: str
    kind: str
    psp_reference: str
    amount: int
    currency: str = ""
    attempt_key: str = ""
    reference: str = ""
    refund_key: str = ""
    reason: str = ""
    status: str = ""  # a dispute's status, as the PSP names it
    evidence_due_by: datetime | None = None  # when a dispute's evidence is due at the PSP

    def audit_details(self) -> dict[str, Any]:
        return {"psp": self.psp, "psp_event": self.event_id, "psp_event_type": self.event_type}


class Outcome(StrEnum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    IGNORED = "ignored"
    RETRY_LATER = "retry_later"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str = ""

    @property
    def mismatch(self) -> bool:
        """paymesh and the PSP disagree: worth a human's look (and a metric)."""
        return self.outcome == Outcome.IGNORED and self.reason in MISMATCHES


APPLY = Decision(Outcome.APPLIED)
ALREADY = Decision(Outcome.ALREADY_APPLIED)
# Each contradiction as the kind of mismatch reconciliation names (reconciliation_mismatches_total).
MISMATCH_KINDS = {
    "amount_mismatch": "amount_mismatch",
    "currency_mismatch": "currency_mismatch",
    "unexpected_state": "status_mismatch",
    "refund_failed_here": "status_mismatch",
    "dispute_outcome_differs": "status_mismatch",
}
MISMATCHES = set(MISMATCH_KINDS)


@dataclass(frozen=True)
class PspEventResult:
    """What applying a PSP event decided, and the intent it named (as it is now), if any."""

    decision: Decision
    intent: PaymentIntent | None = None


def retry(reason: str) -> Decision:
    return Decision(Outcome.RETRY_LATER, reason)


def ignore(reason: str) -> Decision:
    return Decision(Outcome.IGNORED, reason)


def _currency_differs(intent: PaymentIntent, currency: str) -> bool:
    return bool(currency) and currency.lower() != intent.currency


def capture(intent: PaymentIntent, amount_captured: int, currency: str) -> Decision:
    """The PSP captured `amount_captured` of the intent's authorization."""
    if _currency_differs(intent, currency):
        return ignore("currency_mismatch")
    if intent.pending_operation:
        # paymesh's own capture, void or authorization is at the PSP: its answer (or the
        # recovery sweep, which asks the PSP under the same key) records the outcome.
        return retry(f"{intent.pending_operation}_in_flight")
    if intent.status == IntentStatus.SUCCEEDED:
        return ALREADY if amount_captured == intent.amount_received else ignore("amount_mismatch")
    if intent.status == IntentStatus.REQUIRES_ACTION:
        # The customer authenticated and the PSP charged at once (automatic capture).
        return APPLY if amount_captured == intent.amount else ignore("amount_mismatch")
    if intent.status in sources(Action.CAPTURE):
        if not 0 < amount_captured <= intent.amount_capturable:
            return ignore("amount_mismatch")
        return APPLY
    if intent.status == IntentStatus.PROCESSING:
        return retry("authorization_in_flight")
    return ignore("unexpected_state")


def refund(
    intent: PaymentIntent,
    matched: Refund | None,
    amount: int,
    currency: str,
    others_in_flight: bool,
) -> Decision:
    """The PSP refunded `amount` of the intent. `matched`: paymesh's refund that the PSP's
    refund is (by the PSP's refund id, or by paymesh's refund id that it was created under);
    `others_in_flight`: another refund of paymesh on the intent is pending and has no PSP
    reference yet, so the PSP's refund might be that one."""
    if _currency_differs(intent, currency):
        return ignore("currency_mismatch")
    if matched is not None:
        if matched.status == RefundStatus.SUCCEEDED:
            return ALREADY if matched.amount == amount else ignore("amount_mismatch")
        if matched.status == RefundStatus.PENDING:
            return retry("refund_in_flight")
        return ignore("refund_failed_here")
    if intent.status != IntentStatus.SUCCEEDED:
        if intent.status in (IntentStatus.REQUIRES_CAPTURE, IntentStatus.PROCESSING):
            return retry("not_captured_yet")  # the capture's event may come later
        return ignore("unexpected_state")
    if others_in_flight:
        return retry("refund_in_flight")
    if amount <= 0 or intent.amount_refunded + amount > intent.amount_received:
        return ignore("amount_mismatch")  # never more than what was captured
    return APPLY


def authentication_ended(intent: PaymentIntent, kind: str, amount: int, currency: str) -> Decision:
    """The PSP reports how the customer's authentication of the intent's payment ended:
    `authorized` (it holds `amount` for a manual capture) or `failed`."""
    if _currency_differs(intent, currency):
        return ignore("currency_mismatch")
    if intent.pending_operation:
        return retry(f"{intent.pending_operation}_in_flight")
    if intent.status == IntentStatus.REQUIRES_ACTION:
        if kind == "authorized" and amount != intent.amount:
            return ignore("amount_mismatch")
        return APPLY
    if intent.status == IntentStatus.PROCESSING:
        return retry("authorization_in_flight")  # its answer is not recorded yet
    # Recorded already, by the merchant's confirm that asked the PSP first.
    recorded = (
        (IntentStatus.REQUIRES_CAPTURE, IntentStatus.SUCCEEDED, IntentStatus.CANCELED)
        if kind == "authorized"
        else (IntentStatus.REQUIRES_PAYMENT_METHOD,)
    )
    return ALREADY if intent.status in recorded else ignore("unexpected_state")


def completion(kind: str, amount: int) -> tuple[Action, dict[str, Any], str, str]:
    """How an intent waiting for its customer is settled by the PSP's report (`capture`,
    `authorized` or `failed`): the action, the intent's new values, its event and the audit
    row's result."""
    values: dict[str, Any]
    if kind == "capture":
        values = {"amount_received": amount, "amount_capturable": 0}
        return Action.CHARGED, values, "payment_intent.succeeded", "succeeded"
    if kind == "authorized":
        values = {"amount_received": 0, "amount_capturable": amount}
        return Action.AUTHORIZED, values, "payment_intent.requires_capture", "authorized"
    values = {
        "amount_capturable": 0,
        "last_payment_error": AuthenticationFailed().as_payment_error(),
    }
    return Action.DECLINED, values, "payment_intent.payment_failed", "declined"
