"""Capture part or all of an authorization: reserve the capture on the intent (only one can
be pending; a second one is refused), capture at the PSP under the reservation's own key,
then record the amount the PSP reports as captured."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway_svc.domain import validation
from gateway_svc.domain.models import PaymentIntent, new_attempt_key
from gateway_svc.domain.outcomes import NotProcessed, OutcomeUnknown, PspRefused
from gateway_svc.domain.status import Action, Pending, move, sources, unexpected_state
from gateway_svc.payments.context import (
    NOTHING_PENDING,
    OutcomePending,
    Payments,
    psp_refused,
    psp_unavailable,
    settles_keys,
)
from gateway_svc.repository import IntentChange, KeyRef
from paymesh.platform.callers import Merchant


async def reserve(
    payments: Payments,
    intent: PaymentIntent,
    operation: Pending,
    action: Action,
    amount: int | None,
    key: KeyRef | None,
    also: dict[str, Any] | None = None,
) -> PaymentIntent:
    """Marks `operation` pending on the intent (and sets `also`), if the intent allows
    `action` and nothing else is pending; the merchant's 400 otherwise."""
    if intent.pending_operation:
        raise unexpected_state(intent.id, intent.status, action, intent.pending_operation)
    move(intent.id, intent.status, action)
    reserved = await payments.repository.change_intent(
        IntentChange(
            intent,
            {
                "pending_operation": operation,
                "pending_key": f"{new_attempt_key(intent.id)}:{operation}",
                "pending_amount": amount,
                "pending_since": datetime.now(UTC),
                **(also or {}),
            },
            statuses=sources(action),
            no_pending=True,
            audits=[("api", f"{action}_started", "pending", {"amount": amount or 0})],
            bind=key,
        )
    )
    if reserved is None:  # another request got there first
        current = await payments.repository.intent(intent.id)
        raise unexpected_state(intent.id, current.status, action, current.pending_operation or "")
    return reserved


async def release(payments: Payments, intent: PaymentIntent, actor: str, result: str) -> None:
    """The pending operation did not happen: the intent is as it was before it."""
    await payments.repository.change_intent(
        IntentChange(
            intent,
            dict(NOTHING_PENDING),
            statuses=(intent.status,),
            pending_key=intent.pending_key,
            audits=[(actor, intent.pending_operation or "", result, {})],
            settles=actor != "api",
        )
    )


async def capture(
    payments: Payments,
    merchant: Merchant,
    intent_id: str,
    amount_to_capture: int,
    key: KeyRef | None,
) -> PaymentIntent:
    intent = await payments.repository.intent(intent_id, merchant)
    move(intent_id, intent.status, Action.CAPTURE)
    amount = validation.capture_amount(amount_to_capture, intent.amount_capturable, intent.currency)
    reserved = await reserve(payments, intent, Pending.CAPTURE, Action.CAPTURE, amount, key)
    captured = await send_reserved(
        payments,
        reserved,
        lambda connector, reference, pending_key: connector.capture(reference, amount, pending_key),
    )
    return await finish(payments, reserved, captured, "api", key)


async def send_reserved(payments: Payments, reserved: PaymentIntent, operation):
    """`operation(connector, psp_reference, pending_key)` at the intent's PSP, for the
    merchant's request that reserved it. Proof that nothing happened releases the reservation
    (the merchant's 400 or 503); an unknown outcome keeps it for the recovery sweep."""
    psp = reserved.psp or ""
    connector = payments.router.connectors[psp]
    try:
        return await payments.router.call(
            psp,
            reserved.pending_operation or "capture",
            lambda: operation(connector, reserved.psp_reference or "", reserved.pending_key or ""),
        )
    except PspRefused as refused:
        await release(payments, reserved, "api", "refused")
        raise psp_refused(psp, refused) from None
    except NotProcessed:
        await release(payments, reserved, "api", "psp_unavailable")
        raise psp_unavailable() from None
    except OutcomeUnknown:
        raise OutcomePending(reserved.pending_operation or "", reserved.id) from None


async def finish(
    payments: Payments,
    intent: PaymentIntent,
    captured: int,
    actor: str,
    key: KeyRef | None = None,
) -> PaymentIntent:
    """Records the capture the PSP reports; the rest of the authorization is released."""
    done = await payments.repository.change_intent(
        IntentChange(
            intent,
            {
                "status": move(intent.id, intent.status, Action.CAPTURE),
                "amount_received": captured,
                "amount_capturable": 0,
                **NOTHING_PENDING,
            },
            statuses=sources(Action.CAPTURE),
            pending_key=intent.pending_key,
            audits=[
                (
                    actor,
                    "capture",
                    "ok",
                    {"amount": captured, "released": intent.amount_capturable - captured},
                )
            ],
            event="payment_intent.succeeded",
            settles=settles_keys(actor, key),
        )
    )
    return done or await payments.repository.intent(intent.id)
