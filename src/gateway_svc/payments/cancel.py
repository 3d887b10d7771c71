"""Cancel an intent. One not yet authorized is canceled in one statement; an authorization,
or a payment the PSP holds open for its customer (requires_action: voided so that the customer
can no longer complete it), is first voided at the PSP (reserve the void → void under its own
key → record)."""

from __future__ import annotations

from gateway_svc.domain import validation
from gateway_svc.domain.changes import IntentChange, KeyRef
from gateway_svc.domain.models import PaymentIntent
from gateway_svc.domain.status import Action, IntentStatus, Pending, move, unexpected_state
from gateway_svc.payments.capture import reserve, send_reserved
from gateway_svc.payments.context import NOTHING_PENDING, Payments
from paymesh.platform.callers import Merchant


async def cancel(
    payments: Payments,
    merchant: Merchant,
    intent_id: str,
    key: KeyRef | None,
    cancellation_reason: str = "",
) -> PaymentIntent:
    """`cancellation_reason` is recorded with the cancel's first step, so that a void the
    recovery sweep finishes keeps it too."""
    reason = {"cancellation_reason": validation.cancellation_reason(cancellation_reason)}
    intent = await payments.repository.intent(intent_id, merchant)
    move(intent_id, intent.status, Action.CANCEL)
    if intent.status not in (IntentStatus.REQUIRES_CAPTURE, IntentStatus.REQUIRES_ACTION):
        return await _record(payments, intent, "api", key and key.ended(), reason)
    reserved = await reserve(payments, intent, Pending.VOID, Action.CANCEL, None, key, reason)
    await send_reserved(
        payments,
        reserved,
        lambda connector, reference, pending_key: connector.void(reference, pending_key),
    )
    return await finish(payments, reserved, "api")


async def finish(payments: Payments, intent: PaymentIntent, actor: str) -> PaymentIntent:
    """Records a void the PSP confirmed."""
    return await _record(payments, intent, actor, None)


async def _record(
    payments: Payments,
    intent: PaymentIntent,
    actor: str,
    key: KeyRef | None,
    reason: dict[str, str | None] | None = None,
) -> PaymentIntent:
    voided = intent.pending_operation == Pending.VOID
    canceled = await payments.repository.change_intent(
        IntentChange(
            intent,
            {
                "status": move(intent.id, intent.status, Action.CANCEL),
                "amount_capturable": 0,
                **NOTHING_PENDING,
                **(reason or {}),
            },
            statuses=(intent.status,),
            pending_key=intent.pending_key if voided else None,
            no_pending=not voided,
            audits=[(actor, "cancel", "ok", {})],
            event="payment_intent.canceled",
            bind=key,
            settles=voided,
        )
    )
    if canceled is None:
        current = await payments.repository.intent(intent.id)
        if current.status == IntentStatus.CANCELED:
            return current
        raise unexpected_state(intent.id, current.status, "cancel", current.pending_operation or "")
    return canceled
