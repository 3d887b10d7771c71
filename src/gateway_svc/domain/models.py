"""The intent, the refund and the dispute as plain values (what the repository reads and
writes), and what a merchant asks to create."""

from __future__ import annotations

import dataclasses
import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def new_attempt_key(intent_id: str) -> str:
    """A PSP idempotency key for one authorization attempt (or capture, or void)."""
    return f"{intent_id}:{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class NewIntent:
    amount: int
    currency: str
    payment_method: str
    capture_method: str
    confirm: bool
    description: str
    metadata: dict[str, str]
    return_url: str = ""  # where the PSP sends the customer back after authentication


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    id: str
    merchant_id: str
    livemode: bool
    amount: int
    currency: str
    status: str
    capture_method: str
    amount_capturable: int = 0
    amount_received: int = 0
    amount_refunded: int = 0
    payment_method: str | None = None
    psp: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    last_payment_error: dict[str, str] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    psp_reference: str | None = None
    attempt_key: str | None = None
    pending_operation: str | None = None
    pending_key: str | None = None
    pending_amount: int | None = None
    pending_since: datetime | None = None
    # Where the customer comes back after authenticating (the merchant's), and where the PSP
    # waits for them (3-D Secure): shown as `next_action` while the intent requires_action.
    return_url: str | None = None
    next_action_url: str | None = None
    cancellation_reason: str | None = None  # as the cancel gave it (Stripe's values)

    def replace(self, **changes: Any) -> PaymentIntent:
        return dataclasses.replace(self, **changes)

    @property
    def next_action(self) -> dict[str, Any] | None:
        """What the customer must do, shaped as Stripe's PaymentIntent says it."""
        if self.status != "requires_action" or not self.next_action_url:
            return None
        return {
            "type": "redirect_to_url",
            "redirect_to_url": {"url": self.next_action_url, "return_url": self.return_url or ""},
        }


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    merchant_id: str
    livemode: bool
    payment_intent: str
    amount: int
    currency: str
    status: str
    reason: str | None = None
    psp_reference: str | None = None
    created_at: datetime | None = None

    def replace(self, **changes: Any) -> Refund:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Dispute:
    """A chargeback of a captured payment, as its PSP reported it (gateway_svc.domain.disputes
    decides how it moves)."""

    id: str
    merchant_id: str
    livemode: bool
    payment_intent: str
    amount: int
    currency: str
    reason: str
    status: str
    psp: str
    psp_reference: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One payment_audit row: who did what to which object, with what result."""

    merchant_id: str
    actor: str  # api | worker | webhook | ops | operator (details name the operator)
    action: str
    object_id: str
    result: str
    details: dict[str, Any]

    @classmethod
    def of_intent(
        cls, intent: PaymentIntent, actor: str, action: str, result: str, **details: Any
    ) -> AuditEntry:
        facts: dict[str, Any] = {"status": intent.status, "amount": intent.amount}
        if intent.psp:
            facts["psp"] = intent.psp
        decline_code = (intent.last_payment_error or {}).get("decline_code")
        if decline_code:
            facts["decline_code"] = decline_code
        return cls(intent.merchant_id, actor, action, intent.id, result, {**facts, **details})

    @classmethod
    def of_dispute(cls, dispute: Dispute, actor: str, action: str, **details: Any) -> AuditEntry:
        facts = {
            "payment_intent": dispute.payment_intent,
            "amount": dispute.amount,
            "reason": dispute.reason,
            "psp": dispute.psp,
            "psp_reference": dispute.psp_reference,
        }
        return cls(
            dispute.merchant_id, actor, action, dispute.id, dispute.status, {**facts, **details}
        )

    @classmethod
    def of_refund(cls, refund: Refund, actor: str, action: str, **details: Any) -> AuditEntry:
        return cls(
            refund.merchant_id,
            actor,
            action,
            refund.id,
            refund.status,
            {"payment_intent": refund.payment_intent, "amount": refund.amount, **details},
        )


@dataclass(frozen=True, slots=True)
class Event:
    """A domain event for the outbox, about `subject` as the change left it (its row goes
    into the event: the relay shows it as the API does)."""

    type: str
    aggregate_type: str
    subject: PaymentIntent | Refund | Dispute

    @property
    def aggregate_id(self) -> str:
        return self.subject.id

    @classmethod
    def of_intent(cls, event_type: str, intent: PaymentIntent) -> Event:
        return cls(event_type, "payment_intent", intent)

    @classmethod
    def of_refund(cls, event_type: str, refund: Refund) -> Event:
        return cls(event_type, "refund", refund)

    @classmethod
    def of_dispute(cls, event_type: str, dispute: Dispute) -> Event:
        return cls(event_type, "dispute", dispute)
