"""Create and confirm: the authorization protocol.

1. Before anything is written: the input is checked and the vault gives the first PSP's token
   for the card (a missing card is a 400 that writes nothing).
2. Reserve: one statement puts the intent in `processing` with a fresh attempt key, the PSP
   it goes to and `pending_since` (where the recovery sweep will look), and binds the
   idempotency key to it.
3. Call the PSPs of the route, outside any transaction. Fail over only on proof that nothing
   happened. A PSP that no longer knows the card gets it again from the vault, once
   (`gateway_svc.psp.routing`). Before each charge the intent records the PSP and the key it
   goes under, where the sweep will look.
4. Record: one statement settles the outcome, conditional on the attempt key. An unknown
   outcome records nothing: the intent stays `processing` until the sweep asks the PSP.
   An authorization that arrives after the attempt was given up is adopted if nothing else
   happened to the intent since, and otherwise released at the PSP: never ignored.
5. A PSP that needs the customer (3-D Secure) leaves the intent in `requires_action` with
   nothing pending: a later confirm asks that PSP how the customer's authentication of the
   attempt ended (`complete`), or the PSP's webhook tells it (gateway_svc.psp_events).

What the merchant hears (the outcome taxonomy, `gateway_svc.domain.outcomes`): an issuer's
decline is `requires_payment_method` with `card_declined`, naming the PSP that declined; a
route where no PSP holds the card nor would take it from the vault is `requires_payment_method`
with `card_reprovision_failed` (soft: nothing was charged, no issuer said no); a route where
every PSP failed is a 503 `psp_unavailable` with Retry-After, and the intent may be confirmed
again."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from gateway_svc.domain import validation
from gateway_svc.domain.changes import IntentChange, KeyRef
from gateway_svc.domain.models import (
    AuditEntry,
    Event,
    NewIntent,
    PaymentIntent,
    new_attempt_key,
    new_id,
)
from gateway_svc.domain.outcomes import (
    Authorization,
    CardNotProvisioned,
    CustomerActionRequired,
    OutcomeUnknown,
    PspDeclined,
    PspRefused,
    PspTrouble,
)
from gateway_svc.domain.status import (
    Action,
    IntentStatus,
    Pending,
    move,
    sources,
    unexpected_state,
)
from gateway_svc.metrics import PAYMENTS_DECLINED
from gateway_svc.payments.context import (
    NOTHING_PENDING,
    Payments,
    psp_refused,
    psp_unavailable,
    settles_keys,
)
from gateway_svc.psp.routing import NoPspAvailable
from gateway_svc.psp.vault import VaultUnavailable
from paymesh.platform.callers import Merchant
from paymesh.platform.problems import FailedPrecondition, InvalidArgument
from paymesh.platform.tracing import annotate

log = structlog.get_logger(__name__)


async def create(
    payments: Payments,
    merchant: Merchant,
    new: NewIntent,
    key: KeyRef | None,
    resume_from: str | None = None,
) -> PaymentIntent:
    validation.validate_new_intent(
        amount=new.amount,
        currency=new.currency,
        capture_method=new.capture_method,
        confirm=new.confirm,
        payment_method=new.payment_method,
        description=new.description,
        metadata=new.metadata,
        return_url=new.return_url,
    )
    if resume_from is not None:  # this key's earlier try made the intent; no PSP took it
        made = await payments.repository.intent(resume_from, merchant)
        if made.status in sources(Action.CONFIRM):
            return await confirm(
                payments, merchant, made.id, new.payment_method, key, new.return_url
            )
        if key is not None:
            await payments.repository.complete_key(key, made.id)
        return made
    intent = PaymentIntent(
        id=new_id("pi_"),
        merchant_id=merchant.id,
        livemode=merchant.livemode,
        amount=new.amount,
        currency=new.currency,
        status=IntentStatus.REQUIRES_CONFIRMATION
        if new.payment_method
        else IntentStatus.REQUIRES_PAYMENT_METHOD,
        capture_method=new.capture_method or "automatic",
        payment_method=new.payment_method or None,
        description=new.description or None,
        metadata=new.metadata,
        return_url=new.return_url or None,
    )
    audits = [AuditEntry.of_intent(intent, "api", "create", "ok")]
    if not new.confirm:
        bind = key.ended() if key else None
        event = Event.of_intent("payment_intent.created", intent)
        return await payments.repository.insert_intent(intent, audits, event, bind)
    route = await payments.route(merchant)
    remembered = _remembered_card(payments, merchant, intent, route)
    first_card = remembered or await _first_card(payments, merchant, intent, route)
    intent = intent.replace(**_confirm_start(intent, route))
    audits.append(AuditEntry.of_intent(intent, "api", "confirm_started", "processing"))
    event = Event.of_intent("payment_intent.created", intent)
    reserved = None
    if remembered is not None:  # one statement checks the card's revocation and reserves
        reserved = await payments.repository.insert_intent_unless_revoked(
            intent, audits, event, key
        )
        if reserved is None:  # revoked since it was remembered: the vault says what it is now
            first_card = await _first_card(payments, merchant, intent, route, revoked=True)
    if reserved is None:
        reserved = await payments.repository.insert_intent(intent, audits, event, key)
    return await _authorize(payments, merchant, reserved, route, first_card, key)


async def confirm(
    payments: Payments,
    merchant: Merchant,
    intent_id: str,
    payment_method: str,
    key: KeyRef | None,
    return_url: str = "",
) -> PaymentIntent:
    violations = [
        v
        for v in (
            validation.payment_method_violation(payment_method),
            validation.return_url_violation(return_url),
        )
        if v
    ]
    if violations:
        raise InvalidArgument(violations)
    intent = await payments.repository.intent(intent_id, merchant)
    if intent.status == IntentStatus.REQUIRES_ACTION:
        return await complete(payments, intent, payment_method, return_url, key)
    move(intent_id, intent.status, Action.CONFIRM)
    intent = intent.replace(payment_method=payment_method or intent.payment_method)
    if not intent.payment_method:
        raise InvalidArgument.for_field(
            "payment_method", "missing", "attach a payment_method to confirm"
        )
    route = await payments.route(merchant)
    first_card = await _first_card(payments, merchant, intent, route)
    started = await payments.repository.change_intent(
        IntentChange(
            intent,
            {
                "status": IntentStatus.PROCESSING,
                "payment_method": intent.payment_method,
                "last_payment_error": None,
                "return_url": return_url or intent.return_url,
                **_confirm_start(intent, route),
            },
            statuses=sources(Action.CONFIRM),
            no_pending=True,
            audits=[("api", "confirm_started", "processing", {})],
            bind=key,
        )
    )
    if started is None:  # confirmed (or canceled) by another request meanwhile
        current = await payments.repository.intent(intent_id)
        raise unexpected_state(intent_id, current.status, "confirm")
    return await _authorize(payments, merchant, started, route, first_card, key)


def _confirm_start(intent: PaymentIntent, route: list[str]) -> dict:
    attempt_key = new_attempt_key(intent.id)
    return {
        "status": IntentStatus.PROCESSING,
        "attempt_key": attempt_key,
        "psp": route[0] if route else None,
        "pending_operation": Pending.AUTHORIZE,
        "pending_key": attempt_key,
        "pending_since": datetime.now(UTC),
    }


def _remembered_card(
    payments: Payments, merchant: Merchant, intent: PaymentIntent, route: list[str]
) -> tuple[str, str | Exception] | None:
    """The card's token at the first available PSP of the route from the gateway's memory,
    not yet checked against revocations: the reserving statement checks."""
    psp = payments.router.first_available(route)
    if psp is None:
        return None
    token = payments.card_tokens.remembered(merchant, intent.payment_method or "", psp)
    return None if token is None else (psp, token)


async def _first_card(
    payments: Payments,
    merchant: Merchant,
    intent: PaymentIntent,
    route: list[str],
    revoked: bool = False,
) -> tuple[str, str | Exception] | None:
    """The card's token at the first PSP of the route that is not skipped (open breaker),
    or the decline or failure that stands for it. A card that does not exist
    (InvalidArgument) or a vault that is down raises: nothing is written for those.
    `revoked`: the remembered token was found revoked; only the vault may answer now."""
    psp = payments.router.first_available(route)
    if psp is None:
        return None
    payment_method, reason = intent.payment_method or "", f"authorize {intent.id}"
    try:
        if revoked:
            token = await payments.card_tokens.from_vault(
                merchant, payment_method, psp, reason, revoked=True
            )
        else:
            token = await payments.card_tokens.psp_token(merchant, payment_method, psp, reason)
    except (PspDeclined, PspTrouble, CardNotProvisioned) as outcome:
        return psp, outcome
    return psp, token


async def _authorize(
    payments: Payments,
    merchant: Merchant,
    intent: PaymentIntent,
    route: list[str],
    first_card: tuple[str, str | Exception] | None,
    key: KeyRef | None,
) -> PaymentIntent:
    prefetched = [first_card] if first_card is not None else []

    async def card_for(psp: str) -> str:
        if prefetched and prefetched[0][0] == psp:  # used once: a retry asks the vault again
            _, card = prefetched.pop()
            if isinstance(card, Exception):
                raise card
            return card
        return await payments.card_tokens.psp_token(
            merchant, intent.payment_method or "", psp, reason=f"authorize {intent.id}"
        )

    try:
        psp, authorization = await payments.router.authorize(
            route,
            card_for,
            amount=intent.amount,
            currency=intent.currency,
            capture=intent.capture_method == "automatic",
            attempt_key=intent.attempt_key or "",
            on_attempt=recorder(payments, intent),
            reprovision=reprovisioner(payments, intent, f"authorize {intent.id}"),
            return_url=intent.return_url or "",
        )
    except PspDeclined as decline:
        return await settle_decline(payments, intent, decline, "api", key)
    except CustomerActionRequired as action:
        return await settle_action_required(payments, intent, action, "api", key)
    except OutcomeUnknown as unknown:
        log.warning("psp_outcome_unknown", correlation_id=intent.id, error=str(unknown))
        if key is not None:
            await payments.repository.complete_key(key, intent.id)
        return await payments.repository.intent(intent.id)
    except NoPspAvailable as nowhere:
        if nowhere.card_refusal is not None:
            return await settle_card_refusal(payments, intent, nowhere.card_refusal, "api", key)
        await abandon(payments, intent, "api", str(nowhere))
        raise psp_unavailable() from None
    except (VaultUnavailable, InvalidArgument) as error:
        await abandon(payments, intent, "api", str(error))
        raise
    return await settle_authorization(payments, intent, psp, authorization, "api", key)


def recorder(payments: Payments, intent: PaymentIntent):
    """`on_attempt(psp, pending_key)` for the router: records on the intent the PSP and the
    key its next charge goes under (a failover, a card provisioned again), before it is sent,
    so that the recovery sweep asks that PSP about that key and no other."""
    recorded = {"psp": intent.psp, "pending_key": intent.pending_key}

    async def on_attempt(psp: str, pending_key: str) -> None:
        annotate(psp=psp, **{"intent.id": intent.id})
        where = {"psp": psp, "pending_key": pending_key}
        if where == recorded:
            return
        await payments.repository.change_intent(
            IntentChange(
                intent,
                where,
                statuses=(IntentStatus.PROCESSING,),
                attempt_key=intent.attempt_key,
            )
        )
        recorded.update(where)

    return on_attempt


def reprovisioner(payments: Payments, intent: PaymentIntent, reason: str):
    """`reprovision(psp, unknown_reference)` for the router: the card made again at a PSP that
    no longer knows it (by the vault, from the card it holds)."""
    merchant = Merchant(intent.merchant_id, intent.livemode)

    async def reprovision(psp: str, unknown_reference: str) -> str:
        log.warning("card_reprovisioning", correlation_id=intent.id, psp=psp)
        return await payments.card_tokens.reprovision(
            merchant, intent.payment_method or "", psp, unknown_reference, reason
        )

    return reprovision


async def settle_authorization(
    payments: Payments,
    intent: PaymentIntent,
    psp: str,
    authorization: Authorization,
    actor: str,
    key: KeyRef | None = None,
) -> PaymentIntent:
    """Records an authorization of `intent`'s attempt; one that nobody may keep any more
    (the intent was canceled or confirmed again since) is released at the PSP. `key`: the
    request's own idempotency key, done with it."""
    if authorization.captured:
        action, event, result = Action.CHARGED, "payment_intent.succeeded", "succeeded"
        amounts = {"amount_received": intent.amount, "amount_capturable": 0}
    else:
        action, event, result = Action.AUTHORIZED, "payment_intent.requires_capture", "authorized"
        amounts = {"amount_received": 0, "amount_capturable": intent.amount}
    settled = await payments.repository.change_intent(
        IntentChange(
            intent,
            {
                "status": move(intent.id, IntentStatus.PROCESSING, action),
                **amounts,
                "psp": psp,
                "psp_reference": authorization.reference,
                "last_payment_error": None,
                **NOTHING_PENDING,
            },
            statuses=sources(action),
            attempt_key=intent.attempt_key,
            audits=[(actor, "confirm", result, {})],
            event=event,
            settles=settles_keys(actor, key),
        )
    )
    if settled is not None:
        return settled
    current = await payments.repository.intent(intent.id)
    if current.psp_reference != authorization.reference:
        await release_late_authorization(payments, current, intent, psp, authorization)
    return current


async def settle_decline(
    payments: Payments,
    intent: PaymentIntent,
    decline: PspDeclined,
    actor: str,
    key: KeyRef | None = None,
) -> PaymentIntent:
    """Records the issuer's decline, naming the PSP that declined."""
    settled = await _settle_unpaid(
        payments, intent, decline.as_payment_error(), decline.psp, "declined", actor, key
    )
    if settled is not None:  # this writer recorded the decline: counted once
        code = decline.decline_code or decline.as_payment_error()["code"]
        PAYMENTS_DECLINED.labels(settled.psp or "", code).inc()
    return settled or await payments.repository.intent(intent.id)


async def settle_card_refusal(
    payments: Payments,
    intent: PaymentIntent,
    refusal: CardNotProvisioned,
    actor: str,
    key: KeyRef | None = None,
) -> PaymentIntent:
    """No PSP holds the card nor would take it from the vault: the merchant needs the card
    again (or a later retry). Not a decline, and not counted as one."""
    error = refusal.as_payment_error()
    settled = await _settle_unpaid(payments, intent, error, refusal.psp, error["code"], actor, key)
    return settled or await payments.repository.intent(intent.id)


async def _settle_unpaid(
    payments: Payments,
    intent: PaymentIntent,
    error: dict[str, str],
    psp: str,
    result: str,
    actor: str,
    key: KeyRef | None,
) -> PaymentIntent | None:
    """The attempt ended with nothing charged and the payment method at fault (or gone):
    `requires_payment_method` with `error`, naming `psp` when a PSP answered so."""
    return await payments.repository.change_intent(
        IntentChange(
            intent,
            {
                "status": move(intent.id, IntentStatus.PROCESSING, Action.DECLINED),
                "amount_received": 0,
                "amount_capturable": 0,
                "last_payment_error": error,
                **({"psp": psp} if psp else {}),
                **NOTHING_PENDING,
            },
            statuses=sources(Action.DECLINED),
            attempt_key=intent.attempt_key,
            audits=[(actor, "confirm", result, {})],
            event="payment_intent.payment_failed",
            settles=settles_keys(actor, key),
        )
    )


async def settle_action_required(
    payments: Payments,
    intent: PaymentIntent,
    action: CustomerActionRequired,
    actor: str,
    key: KeyRef | None = None,
) -> PaymentIntent:
    """Records that the PSP waits for the customer: nothing is held and nothing is in flight
    (no sweep, no breaker), until a confirm or the PSP's webhook says how it ended. One that
    nobody waits for any more is cancelled at the PSP, so that it can never charge."""
    settled = await payments.repository.change_intent(
        IntentChange(
            intent,
            {
                "status": move(intent.id, IntentStatus.PROCESSING, Action.ACTION_REQUIRED),
                "amount_received": 0,
                "amount_capturable": 0,
                "psp": action.psp,
                "psp_reference": action.reference,
                "next_action_url": action.url,
                "last_payment_error": None,
                **NOTHING_PENDING,
            },
            statuses=sources(Action.ACTION_REQUIRED),
            attempt_key=intent.attempt_key,
            audits=[(actor, "confirm", "requires_action", {})],
            event="payment_intent.requires_action",
            settles=settles_keys(actor, key),
        )
    )
    if settled is not None:
        return settled
    current = await payments.repository.intent(intent.id)
    if current.psp_reference != action.reference:
        waiting = Authorization(action.reference, captured=False)
        await release_late_authorization(payments, current, intent, action.psp, waiting)
    return current


async def complete(
    payments: Payments,
    intent: PaymentIntent,
    payment_method: str,
    return_url: str,
    key: KeyRef | None,
) -> PaymentIntent:
    """A confirm of an intent waiting for its customer: asks its PSP how the authentication of
    the attempt ended, and records it (charged, authorized, failed); still waiting leaves it
    as it is. No new authorization goes out, so nothing can be charged twice."""
    changed = [
        name
        for name, given, held in (
            ("payment_method", payment_method, intent.payment_method),
            ("return_url", return_url, intent.return_url),
        )
        if given and given != held
    ]
    if changed:  # the customer is at the PSP with what it was given
        raise FailedPrecondition(
            f"payment_intent {intent.id!r} waits for its customer's authentication: its"
            f" {' and '.join(changed)} cannot change now; cancel it and create a new one",
            reason="payment_intent_unexpected_state",
            metadata={"status": str(intent.status)},
        )
    psp, reference = intent.psp or "", intent.psp_reference or ""
    connector = payments.router.connectors.get(psp)
    if connector is None:
        raise psp_unavailable()
    try:
        outcome = await payments.router.call(psp, "retrieve", lambda: connector.retrieve(reference))
    except CustomerActionRequired:
        settled = None  # still waiting
    except PspDeclined as decline:
        settled = await settle_decline(payments, intent, decline, "api")
    except PspTrouble:
        raise psp_unavailable() from None  # nothing was changed: the confirm may be retried
    except PspRefused as refused:
        raise psp_refused(psp, refused) from None
    else:
        settled = await settle_authorization(payments, intent, psp, outcome, "api")
    if key is not None:
        await payments.repository.complete_key(key, intent.id)
    return settled or await payments.repository.intent(intent.id)


async def abandon(payments: Payments, intent: PaymentIntent, actor: str, why: str) -> None:
    """No PSP took it: nothing was charged, so the intent may be confirmed again."""
    await payments.repository.change_intent(
        IntentChange(
            intent,
            {
                "status": IntentStatus.REQUIRES_CONFIRMATION,
                "last_payment_error": {
                    "code": "processing_error",
                    "decline_code": "",
                    "message": "No payment processor was available; nothing was charged.",
                    "type": "soft",
                },
                **NOTHING_PENDING,
            },
            statuses=sources(Action.NOT_PROCESSED),
            attempt_key=intent.attempt_key,
            audits=[(actor, "confirm", "psp_unavailable", {"why": why})],
            settles=actor != "api",  # the request's own key is released with its error
        )
    )


async def release_late_authorization(
    payments: Payments,
    current: PaymentIntent,
    attempt: PaymentIntent,
    psp: str,
    authorization: Authorization,
) -> None:
    """The PSP holds money for an attempt the intent no longer waits for: give it back
    (void an authorization, refund a charge) under a key of its own, and put it on record."""
    connector = payments.router.connectors[psp]
    release_key = f"{attempt.attempt_key}:{psp}:release"
    try:
        if authorization.captured:
            await payments.router.call(
                psp,
                "refund",
                lambda: connector.refund(authorization.reference, attempt.amount, release_key),
            )
        else:
            await payments.router.call(
                psp, "void", lambda: connector.void(authorization.reference, release_key)
            )
        result = "released"
    except (PspTrouble, PspRefused) as error:
        log.error("late_authorization_not_released", correlation_id=current.id, error=str(error))
        result = "release_failed"
    await payments.repository.audit(
        AuditEntry.of_intent(
            current,
            "worker",
            "late_authorization",
            result,
            psp=psp,
            psp_reference=authorization.reference,
            captured=authorization.captured,
        )
    )
