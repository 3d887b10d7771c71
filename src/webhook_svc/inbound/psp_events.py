"""The PSPs' webhook events read into the facts the gateway applies (PspEventService): a
capture, a refund or a dispute of a payment, or how its customer's authentication (3-D Secure)
ended, named by the PSP's reference of it. What cannot be read into a fact is not guessed at:
it is recorded and ignored, with its reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from paymesh.gateway.v1 import psp_events_pb2
from paymesh.platform.problems import InvalidArgument

# What an event's `created` may be: a Unix time from 1970 to the end of year 9999 (what a
# datetime and a protobuf Timestamp can hold; no PSP event is older than the epoch).
LATEST_CREATED = 253402300799


@dataclass(frozen=True)
class Parsed:
    """The facts of one event (one per refund for a charge that lists several), or why none."""

    facts: list[psp_events_pb2.ApplyPspEventRequest] = field(default_factory=list)
    ignored: str = ""  # the reason when there is no fact


def read_event(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.for_field("body", "invalid_json", "the event is not JSON") from None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and 0 < len(event["id"]) <= 255
        and isinstance(event.get("type"), str)
        and len(event["type"]) <= 100
        and isinstance(event.get("created"), int)
        and not isinstance(event.get("created"), bool)
    ):
        raise InvalidArgument.for_field(
            "body", "invalid_event", "the event needs an id, a type and created"
        )
    if not 0 <= event["created"] <= LATEST_CREATED:
        raise InvalidArgument.for_field(
            "created", "invalid_event", "created must be a Unix time between 1970 and 9999"
        )
    return event


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _amount(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse(psp: str, event: dict[str, Any]) -> Parsed:
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, dict):
        return Parsed(ignored="no_object")
    reader = _SANDBOX if psp == "sandbox" else _STRIPE
    handler = reader.get(_text(event.get("type")))
    if handler is None:
        return Parsed(ignored="unsupported_event")
    return handler(psp, event, obj)


def _request(psp: str, event: dict, reference: str, attempt_key: str = "", **fact):
    return psp_events_pb2.ApplyPspEventRequest(
        psp=psp,
        event_id=event["id"],
        event_type=event["type"],
        psp_reference=reference,
        attempt_key=attempt_key,
        **fact,
    )


def _captured(psp, event, reference, amount, currency, attempt_key="") -> Parsed:
    if not reference:
        return Parsed(ignored="no_payment_reference")
    if amount is None:
        return Parsed(ignored="no_amount")
    captured = psp_events_pb2.Captured(amount_captured=amount, currency=currency)
    return Parsed([_request(psp, event, reference, attempt_key, captured=captured)])


def _refunded(psp, event, reference, refund: dict, suffix: str = "") -> Parsed:
    refund_id, amount = _text(refund.get("id")), _amount(refund.get("amount"))
    if not reference or not refund_id:
        return Parsed(ignored="no_payment_reference")
    if amount is None:
        return Parsed(ignored="no_amount")
    if refund.get("status", "succeeded") != "succeeded":
        return Parsed(ignored="refund_not_succeeded")
    key = _text(refund.get("idempotency_key")) or _text(
        (refund.get("metadata") or {}).get("paymesh_refund")
    )
    request = _request(
        psp,
        event,
        reference,
        refunded=psp_events_pb2.Refunded(
            refund_reference=refund_id,
            amount=amount,
            currency=_text(refund.get("currency")),
            refund_key=key,
        ),
    )
    if suffix:  # one event reporting several refunds: each applied once, on its own
        request.event_id = f"{request.event_id}/{suffix}"
    return Parsed([request])


def _disputed(psp, event, reference, dispute: dict) -> Parsed:
    dispute_id = _text(dispute.get("id"))
    if not reference or not dispute_id:
        return Parsed(ignored="no_payment_reference")
    disputed = psp_events_pb2.Disputed(
        dispute_reference=dispute_id,
        amount=_amount(dispute.get("amount")) or 0,
        reason=_text(dispute.get("reason")),
        currency=_text(dispute.get("currency")),
        status=_text(dispute.get("status")),
    )
    due_by = (dispute.get("evidence_details") or {}).get("due_by")
    if isinstance(due_by, int) and not isinstance(due_by, bool) and 0 < due_by < 2**40:
        disputed.evidence_due_by.FromSeconds(due_by)
    return Parsed([_request(psp, event, reference, disputed=disputed)])


def _authorized(psp, event, reference, amount, currency, attempt_key="") -> Parsed:
    if not reference:
        return Parsed(ignored="no_payment_reference")
    if amount is None:
        return Parsed(ignored="no_amount")
    authorized = psp_events_pb2.Authorized(amount_capturable=amount, currency=currency)
    return Parsed([_request(psp, event, reference, attempt_key, authorized=authorized)])


def _authentication_failed(psp, event, reference, code: str, attempt_key="") -> Parsed:
    if not reference:
        return Parsed(ignored="no_payment_reference")
    failed = psp_events_pb2.AuthenticationFailed(code=code)
    return Parsed([_request(psp, event, reference, attempt_key, authentication_failed=failed)])


# --- the sandbox PSP (dev.sandbox_psp) ---------------------------------------------------


def _sandbox_captured(psp, event, charge):
    return _captured(
        psp,
        event,
        _text(charge.get("id")),
        _amount(charge.get("amount_captured")),
        _text(charge.get("currency")),
        _text(charge.get("idempotency_key")),
    )


def _sandbox_dispute(psp, event, dispute):
    return _disputed(psp, event, _text(dispute.get("charge")), dispute)


def _sandbox_authorized(psp, event, charge):
    return _authorized(
        psp,
        event,
        _text(charge.get("id")),
        _amount(charge.get("amount")),
        _text(charge.get("currency")),
        _text(charge.get("idempotency_key")),
    )


def _sandbox_failed(psp, event, charge):
    return _authentication_failed(
        psp,
        event,
        _text(charge.get("id")),
        _text(charge.get("failure_code")),
        _text(charge.get("idempotency_key")),
    )


_SANDBOX = {
    "charge.captured": _sandbox_captured,
    "charge.authorized": _sandbox_authorized,
    "charge.failed": _sandbox_failed,
    "charge.refunded": lambda psp, event, refund: _refunded(
        psp, event, _text(refund.get("charge")), refund
    ),
    # Each event of a dispute carries it as it stands (opened, under review, won, lost).
    "charge.dispute.created": _sandbox_dispute,
    "charge.dispute.updated": _sandbox_dispute,
    "charge.dispute.closed": _sandbox_dispute,
}


# --- Stripe (paymesh's Stripe reference of a payment is its PaymentIntent id) ---------------


def _stripe_intent_succeeded(psp, event, intent):
    amount = _amount(intent.get("amount_received"))
    if amount is None:
        # localstripe's PaymentIntent has no amount_received: its latest charge says what was
        # captured, provably only when nothing of it was refunded or released.
        charge = (
            intent.get("latest_charge") if isinstance(intent.get("latest_charge"), dict) else {}
        )
        if charge.get("captured") is True and not charge.get("amount_refunded"):
            amount = _amount(charge.get("amount"))
    attempt_key = _text((intent.get("metadata") or {}).get("paymesh_attempt"))
    return _captured(
        psp, event, _text(intent.get("id")), amount, _text(intent.get("currency")), attempt_key
    )


def _stripe_capturable(psp, event, intent):
    """A manual-capture PaymentIntent the customer authenticated: it holds the amount now."""
    if intent.get("status") != "requires_capture":
        return Parsed(ignored="not_authorized")
    attempt_key = _text((intent.get("metadata") or {}).get("paymesh_attempt"))
    return _authorized(
        psp,
        event,
        _text(intent.get("id")),
        _amount(intent.get("amount_capturable")),
        _text(intent.get("currency")),
        attempt_key,
    )


def _stripe_payment_failed(psp, event, intent):
    """Only a failed authentication is a fact here: a decline is the authorization's own
    answer, recorded when it came."""
    code = _text((intent.get("last_payment_error") or {}).get("code"))
    if code != "payment_intent_authentication_failure":
        return Parsed(ignored="not_an_authentication_failure")
    attempt_key = _text((intent.get("metadata") or {}).get("paymesh_attempt"))
    return _authentication_failed(psp, event, _text(intent.get("id")), code, attempt_key)


def _stripe_charge_captured(psp, event, charge):
    return _captured(
        psp,
        event,
        _text(charge.get("payment_intent")),
        _amount(charge.get("amount_captured")),
        _text(charge.get("currency")),
    )


def _stripe_refund(psp, event, refund):
    return _refunded(psp, event, _text(refund.get("payment_intent")), refund)


def _stripe_charge_refunded(psp, event, charge):
    listed = charge.get("refunds")
    refunds = listed.get("data") if isinstance(listed, dict) else None
    if not isinstance(refunds, list) or not refunds:
        return Parsed(ignored="no_refund_list")  # refund.created / refund.updated report them
    reference = _text(charge.get("payment_intent"))
    facts: list = []
    for refund in refunds:
        if not isinstance(refund, dict):
            continue
        parsed = _refunded(psp, event, reference, refund, suffix=_text(refund.get("id")))
        facts.extend(parsed.facts)
    return Parsed(facts) if facts else Parsed(ignored="no_refund_list")


def _stripe_dispute(psp, event, dispute):
    return _disputed(psp, event, _text(dispute.get("payment_intent")), dispute)


_STRIPE = {
    "payment_intent.succeeded": _stripe_intent_succeeded,
    "payment_intent.amount_capturable_updated": _stripe_capturable,
    "payment_intent.payment_failed": _stripe_payment_failed,
    "charge.captured": _stripe_charge_captured,
    "charge.refunded": _stripe_charge_refunded,
    "refund.created": _stripe_refund,
    "refund.updated": _stripe_refund,
    "charge.refund.updated": _stripe_refund,
    "charge.dispute.created": _stripe_dispute,
    "charge.dispute.updated": _stripe_dispute,
    "charge.dispute.closed": _stripe_dispute,
}
