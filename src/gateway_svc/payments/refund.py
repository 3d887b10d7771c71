"""Refunds: reserve the amount under the intent's lock (concurrent refunds never exceed what
was captured) → refund at the PSP under the refund's id → record. A refund whose outcome is
unknown stays `pending`, its amount reserved, until the PSP says what happened: handing the
amount back on a timeout is how a gateway refunds twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway_svc.domain import validation
from gateway_svc.domain.changes import KeyRef
from gateway_svc.domain.models import Refund, new_id
from gateway_svc.domain.outcomes import NotProcessed, OutcomeUnknown, PspRefused
from gateway_svc.domain.status import RefundStatus
from gateway_svc.payments.context import Payments, psp_refused, psp_unavailable
from paymesh.platform.callers import Merchant
from paymesh.platform.problems import InvalidArgument

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Requester:
    """Who asks for a refund, as its audit rows name it: the merchant's API (`api`), or an
    operator in the back office (`operator`, the email and reason in `details`)."""

    actor: str = "api"
    details: dict[str, Any] = field(default_factory=dict)


MERCHANT = Requester()


async def refund(
    payments: Payments,
    merchant: Merchant,
    intent_id: str,
    amount: int,
    reason: str,
    key: KeyRef | None,
    requester: Requester = MERCHANT,
) -> Refund:
    if not validation.id_shaped(intent_id, "pi_"):
        raise InvalidArgument.for_field("payment_intent", "invalid_payment_intent", "a pi_… id")
    actor, details = requester.actor, requester.details
    intent, pending = await payments.repository.reserve_refund(
        merchant, intent_id, amount, reason, new_id("re_"), key, actor, details
    )
    psp = intent.psp or ""
    try:
        reference = await _at_psp(payments, psp, intent.psp_reference or "", pending)
    except PspRefused as refused:
        await payments.repository.finish_refund(pending, RefundStatus.FAILED, None, actor, details)
        raise psp_refused(psp, refused) from None
    except NotProcessed:
        await payments.repository.finish_refund(pending, RefundStatus.FAILED, None, actor, details)
        raise psp_unavailable() from None
    except OutcomeUnknown as unknown:
        log.warning("psp_outcome_unknown", correlation_id=pending.id, error=str(unknown))
        if key is not None:
            await payments.repository.complete_key(key, pending.id)
        return pending
    done = await payments.repository.finish_refund(
        pending, RefundStatus.SUCCEEDED, reference, actor, details
    )
    return done or await payments.repository.refund(pending.id)


async def _at_psp(payments: Payments, psp: str, charge: str, pending: Refund) -> str:
    connector = payments.router.connectors.get(psp)
    if connector is None:
        raise PspRefused("this payment has no PSP reference")
    return await payments.router.call(
        psp, "refund", lambda: connector.refund(charge, pending.amount, pending.id)
    )


async def resume(payments: Payments, pending: Refund, psp: str, charge: str) -> str:
    """The recovery sweep's retry of a pending refund, under the same key: the PSP refunds
    once whether or not an earlier call reached it."""
    try:
        reference = await _at_psp(payments, psp, charge, pending)
    except PspRefused:
        await payments.repository.finish_refund(pending, RefundStatus.FAILED, None, "worker")
        return "refund_failed"
    await payments.repository.finish_refund(pending, RefundStatus.SUCCEEDED, reference, "worker")
    return "refund_succeeded"
