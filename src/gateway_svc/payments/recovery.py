"""The recovery sweep (a janitor, as Kill Bill calls it): settles every PSP operation whose
outcome is not recorded, by asking the PSP, never by guessing.

- authorize: find the attempt at its PSP by its idempotency key. Found: recorded (and the
  retried request's key answers with it). Not found, once no call of that attempt can still
  be running (`older_than_seconds` exceeds the longest confirm): nothing was charged.
- capture, void, refund: the same call again under the same key; the PSP applies it once.
A PSP that still does not answer is asked again next round."""

from __future__ import annotations

import structlog

from gateway_svc.domain.models import PaymentIntent
from gateway_svc.domain.outcomes import PspRefused, PspTrouble
from gateway_svc.domain.status import Pending
from gateway_svc.metrics import RECOVERED
from gateway_svc.payments import authorize, cancel, capture, refund
from gateway_svc.payments.context import Payments

log = structlog.get_logger(__name__)


async def recover(payments: Payments, older_than_seconds: float) -> int:
    settled = 0
    for intent in await payments.repository.pending_intents(older_than_seconds):
        try:
            outcome = await _settle(payments, intent)
        except PspTrouble as trouble:
            log.info("recovery_deferred", correlation_id=intent.id, error=str(trouble))
            continue
        RECOVERED.labels(outcome).inc()
        log.info("recovered_intent", correlation_id=intent.id, outcome=outcome)
        settled += 1
    for pending, intent in await payments.repository.pending_refunds(older_than_seconds):
        try:
            outcome = await refund.resume(
                payments, pending, intent.psp or "", intent.psp_reference or ""
            )
        except PspTrouble:
            continue
        RECOVERED.labels(outcome).inc()
        settled += 1
    return settled


async def _settle(payments: Payments, intent: PaymentIntent) -> str:
    psp = intent.psp or ""
    connector = payments.router.connectors.get(psp)
    if connector is None:
        await authorize.abandon(payments, intent, "worker", f"unknown PSP {psp!r}")
        return "not_charged"
    if intent.pending_operation == Pending.AUTHORIZE:
        found = await connector.find(f"{intent.attempt_key}:{psp}")
        if found is None:
            await authorize.abandon(payments, intent, "worker", "interrupted; not charged")
            return "not_charged"
        await authorize.settle_authorization(payments, intent, psp, found, "worker")
        return "authorized"
    reference, key = intent.psp_reference or "", intent.pending_key or ""
    try:
        if intent.pending_operation == Pending.CAPTURE:
            amount = intent.pending_amount or intent.amount_capturable
            captured = await payments.router.call(
                psp, lambda: connector.capture(reference, amount, key)
            )
            await capture.finish(payments, intent, captured, "worker")
            return "captured"
        await payments.router.call(psp, lambda: connector.void(reference, key))
        await cancel.finish(payments, intent, "worker")
        return "voided"
    except PspRefused:
        await capture.release(payments, intent, "worker", "refused")
        return f"{intent.pending_operation}_refused"
