"""Disputes (chargebacks) as plain decisions: what a PSP's report of a dispute does to paymesh's
record of it. A dispute opens `needs_response`, may go `under_review`, and closes `won` or
`lost`; it never moves backwards, and a closed one never changes its outcome. The money: a
dispute withdraws its amount from the merchant when it opens; a won one gives it back."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway_svc.domain.models import Dispute, PaymentIntent
from gateway_svc.domain.psp_events import ALREADY, APPLY, Decision, PspEvent, ignore, retry
from gateway_svc.domain.status import IntentStatus


class DisputeStatus(StrEnum):
    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"


S = DisputeStatus
CLOSED = frozenset({S.WON, S.LOST})
_RANK = {S.NEEDS_RESPONSE: 0, S.UNDER_REVIEW: 1, S.WON: 2, S.LOST: 2}

# The PSPs' words for a dispute's status (Stripe's, which the sandbox shares). A dispute
# event that names none is the dispute's opening.
_PSP_STATUSES = {
    "": S.NEEDS_RESPONSE,
    "needs_response": S.NEEDS_RESPONSE,
    "under_review": S.UNDER_REVIEW,
    "won": S.WON,
    "lost": S.LOST,
}
# Stripe's inquiries (`warning_…`) withdraw no money and are not disputes (yet): if one
# becomes a dispute, its next event says so.
_INQUIRY_PREFIX = "warning_"


@dataclass(frozen=True)
class DisputeReport:
    """What a PSP says of one of its disputes of a payment."""

    reference: str  # the PSP's dispute id
    amount: int
    currency: str
    reason: str
    psp_status: str

    @classmethod
    def of_event(cls, event: PspEvent) -> DisputeReport:
        return cls(event.reference, event.amount, event.currency, event.reason, event.status)


@dataclass(frozen=True)
class DisputeMove:
    """The decision, and for an applied one the status the dispute takes (`opens`: it is new)."""

    decision: Decision
    status: DisputeStatus | None = None
    opens: bool = False

    @property
    def closes(self) -> bool:
        return self.status in CLOSED


def decide(intent: PaymentIntent, recorded: Dispute | None, report: DisputeReport) -> DisputeMove:
    """`recorded`: paymesh's dispute of the same PSP dispute id, if there is one."""
    if report.psp_status.startswith(_INQUIRY_PREFIX):
        return DisputeMove(ignore("inquiry"))
    status = _PSP_STATUSES.get(report.psp_status)
    if status is None:
        return DisputeMove(ignore("unsupported_dispute_status"))
    if recorded is not None:
        return _follow(recorded, status)
    if report.currency and report.currency.lower() != intent.currency:
        return DisputeMove(ignore("currency_mismatch"))
    if intent.status in (IntentStatus.REQUIRES_CAPTURE, IntentStatus.PROCESSING):
        return DisputeMove(retry("not_captured_yet"))  # the capture's event may come later
    if intent.status != IntentStatus.SUCCEEDED:
        return DisputeMove(ignore("unexpected_state"))
    if not 0 < report.amount <= intent.amount_received:
        return DisputeMove(ignore("amount_mismatch"))  # never more than what was captured
    # A dispute first heard of closed (its earlier events come late or never) opens and
    # closes at once: the merchant is told both.
    return DisputeMove(APPLY, status, opens=True)


def _follow(recorded: Dispute, status: DisputeStatus) -> DisputeMove:
    current = DisputeStatus(recorded.status)
    if status == current or _RANK[status] < _RANK[current]:
        return DisputeMove(ALREADY)  # the same news, or older news arriving late
    if current in CLOSED:
        return DisputeMove(ignore("dispute_outcome_differs"))  # won here, lost there
    return DisputeMove(APPLY, status)


def event_types(move: DisputeMove) -> list[str]:
    """The merchant's events of an applied move, in order."""
    types = ["charge.dispute.created", "payment_intent.disputed"] if move.opens else []
    if move.closes:
        types.append("charge.dispute.closed")
    elif not move.opens:
        types.append("charge.dispute.updated")
    return types


def audit_action(move: DisputeMove) -> str:
    if move.opens:
        return "dispute_opened"
    return "dispute_closed" if move.closes else "dispute_updated"
