"""The recovery sweep (a janitor, as Kill Bill calls it): settles every PSP operation whose
outcome is not recorded, by asking the PSP, never by guessing.

- authorize: find the attempt at its PSP by the key it went under (the intent's pending key:
  its attempt key, or that key once its card was provisioned again). Found: recorded (and the
  retried request's key answers with it; one that waits for its customer is recorded as
  requires_action, which nothing sweeps: a confirm or the PSP's webhook settles it). Not
  found: the authorization is sent again under the SAME key, which settles it for good (a
  PSP that no longer knows the card gets it again from the vault, as on the merchant's
  request). A
  request of that attempt that is still on its way to the PSP (a slow PSP may process it
  long after we stopped waiting) then meets the PSP's answer for that key instead of
  charging a second time; giving up on "not found" would leave exactly that late charge
  unseen, and a reconfirm would charge again.
- capture, void, refund: the same call again under the same key; the PSP applies it once.
A PSP that still does not answer is asked again next round."""

from __future__ import annotations

import structlog

from gateway_svc.domain.models import PaymentIntent
from gateway_svc.domain.outcomes import (
    Authorization,
    CardNotProvisioned,
    CardUnknownAtPsp,
    CustomerActionRequired,
    PspDeclined,
    PspRefused,
    PspTrouble,
)
from gateway_svc.domain.status import Pending
from gateway_svc.metrics import RECOVERED
from gateway_svc.payments import authorize, cancel, capture, refund
from gateway_svc.payments.context import Payments
from gateway_svc.psp.routing import psp_attempt_key
from paymesh.platform.callers import Merchant
from paymesh.platform.problems import InvalidArgument, Unavailable

log = structlog.get_logger(__name__)


async def recover(payments: Payments, older_than_seconds: float) -> int:
    settled = 0
    for intent in await payments.repository.pending_intents(older_than_seconds):
        try:
            outcome = await _settle(payments, intent)
        except (PspTrouble, Unavailable) as trouble:  # the PSP or the vault: ask next round
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
        except (PspTrouble, Unavailable):
            continue
        RECOVERED.labels(outcome).inc()
        settled += 1
    return settled


async def _settle(payments: Payments, intent: PaymentIntent) -> str:
    psp = intent.psp or ""
    connector = payments.router.connectors.get(psp)
    if connector is None and intent.pending_operation == Pending.AUTHORIZE:
        await authorize.abandon(payments, intent, "worker", f"unknown PSP {psp!r}")
        return "not_charged"
    if connector is None:  # a capture or void at a PSP we cannot ask: it stays in doubt
        raise Unavailable(f"no connector for PSP {psp!r}")
    if intent.pending_operation == Pending.AUTHORIZE:
        pending_key = intent.pending_key or intent.attempt_key or ""
        try:
            found = await connector.find(psp_attempt_key(pending_key, psp))
            if found is None:
                found = await _authorize_again(payments, intent, psp, pending_key)
        except CustomerActionRequired as action:
            await authorize.settle_action_required(payments, intent, action, "worker")
            return "requires_action"
        except PspDeclined as decline:
            await authorize.settle_decline(payments, intent, decline, "worker")
            return "declined"
        except CardNotProvisioned as refusal:
            await authorize.settle_card_refusal(payments, intent, refusal, "worker")
            return "not_charged"
        except (PspRefused, CardUnknownAtPsp, InvalidArgument) as error:  # nothing charged
            await authorize.abandon(payments, intent, "worker", str(error))
            return "not_charged"
        await authorize.settle_authorization(payments, intent, psp, found, "worker")
        return "authorized"
    reference, key = intent.psp_reference or "", intent.pending_key or ""
    try:
        if intent.pending_operation == Pending.CAPTURE:
            amount = intent.pending_amount or intent.amount_capturable
            captured = await payments.router.call(
                psp, "capture", lambda: connector.capture(reference, amount, key)
            )
            await capture.finish(payments, intent, captured, "worker")
            return "captured"
        await payments.router.call(psp, "void", lambda: connector.void(reference, key))
        await cancel.finish(payments, intent, "worker")
        return "voided"
    except PspRefused:
        await capture.release(payments, intent, "worker", "refused")
        return f"{intent.pending_operation}_refused"


async def _authorize_again(
    payments: Payments, intent: PaymentIntent, psp: str, pending_key: str
) -> Authorization:
    merchant = Merchant(intent.merchant_id, intent.livemode)
    reason = f"recover {intent.id}"
    card = await payments.router.call(
        psp,
        None,  # judged by the vault's answers (PspRouter.observe_card)
        lambda: payments.card_tokens.psp_token(
            merchant, intent.payment_method or "", psp, reason=reason
        ),
    )
    return await payments.router.charge(
        psp,
        card,
        amount=intent.amount,
        currency=intent.currency,
        capture=intent.capture_method == "automatic",
        pending_key=pending_key,
        on_attempt=authorize.recorder(payments, intent),
        reprovision=authorize.reprovisioner(payments, intent, reason),
        return_url=intent.return_url or "",
    )
