"""Inbound PSP webhooks as plain Python: Stripe's signature scheme, the PSPs' events read into
facts, and what a PSP's report may do to an intent (gateway_svc.domain.psp_events)."""

from __future__ import annotations

import json
import time

import pytest

from gateway_svc.domain import psp_events as rules
from gateway_svc.domain.models import PaymentIntent, Refund
from paymesh.platform.problems import InvalidArgument
from webhook_svc.inbound import psp_events
from webhook_svc.inbound.psp_events import read_event
from webhook_svc.inbound.psp_signatures import SignatureError, sign, verify

SECRET = "whsec_test"  # noqa: S105


def test_a_signature_verifies_with_any_of_the_secrets_and_any_v1_value():
    body = b'{"id": "evt_1"}'
    now = int(time.time())
    good = sign(body, SECRET, now).split(",")[1]

    assert verify(body, f"t={now},v1=00,{good}", ["whsec_old", SECRET]) == now
    assert verify(body, f"t={now},v0=zz,{good}", [SECRET]) == now


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("v1=abc", "invalid_signature"),
        ("t=abc,v1=abc", "invalid_signature"),
        ("t=１２３,v1=abc", "invalid_signature"),
        ("t=100", "invalid_signature"),
    ],
)
def test_malformed_headers_are_refused(header, reason):
    with pytest.raises(SignatureError) as refused:
        verify(b"{}", header, [SECRET])
    assert refused.value.reason == reason


def test_the_tolerance_is_300_seconds_either_way():
    body, now = b"{}", 1_700_000_000

    assert verify(body, sign(body, SECRET, now - 300), [SECRET], now=now)
    for skew in (-301, 301):
        with pytest.raises(SignatureError) as refused:
            verify(body, sign(body, SECRET, now + skew), [SECRET], now=now)
        assert refused.value.reason == "stale_signature"


def test_a_changed_byte_or_another_secret_is_refused():
    body = b'{"amount": 1}'
    header = sign(body, SECRET)
    for payload, secrets in ((b'{"amount": 2}', [SECRET]), (body, ["whsec_other"]), (body, [])):
        with pytest.raises(SignatureError):
            verify(payload, header, secrets)


def intent(**values) -> PaymentIntent:
    base = {
        "id": "pi_1",
        "merchant_id": "acct_1",
        "livemode": False,
        "amount": 1000,
        "currency": "usd",
        "status": "requires_capture",
        "capture_method": "manual",
        "amount_capturable": 1000,
    }
    return PaymentIntent(**{**base, **values})


SUCCEEDED = intent(status="succeeded", amount_capturable=0, amount_received=1000)


@pytest.mark.parametrize(
    ("state", "captured", "expected"),
    [
        (intent(), 1000, ("applied", "")),
        (intent(), 600, ("applied", "")),
        (intent(), 1001, ("ignored", "amount_mismatch")),
        (intent(), 0, ("ignored", "amount_mismatch")),
        (intent(pending_operation="capture"), 1000, ("retry_later", "capture_in_flight")),
        (intent(pending_operation="void"), 1000, ("retry_later", "void_in_flight")),
        (SUCCEEDED, 1000, ("already_applied", "")),
        (SUCCEEDED, 600, ("ignored", "amount_mismatch")),
        (intent(status="canceled"), 1000, ("ignored", "unexpected_state")),
        (intent(status="processing"), 1000, ("retry_later", "authorization_in_flight")),
    ],
)
def test_a_capture_report(state, captured, expected):
    decision = rules.capture(state, captured, "usd")
    assert (decision.outcome, decision.reason) == expected


WAITING = intent(
    status="requires_action", capture_method="automatic", amount_capturable=0, psp_reference="ch_1"
)


@pytest.mark.parametrize(
    ("state", "kind", "amount", "expected"),
    [
        # How the customer's authentication ended, as the PSP reports it.
        (WAITING, "capture", 1000, ("applied", "")),
        (WAITING, "capture", 999, ("ignored", "amount_mismatch")),
        (WAITING, "authorized", 1000, ("applied", "")),
        (WAITING, "authorized", 10, ("ignored", "amount_mismatch")),
        (WAITING, "failed", 0, ("applied", "")),
        (WAITING.replace(pending_operation="void"), "failed", 0, ("retry_later", "void_in_flight")),
        # The merchant's confirm asked the PSP first and recorded it.
        (intent(), "authorized", 1000, ("already_applied", "")),
        (SUCCEEDED, "authorized", 1000, ("already_applied", "")),
        (intent(status="requires_payment_method"), "failed", 0, ("already_applied", "")),
        (SUCCEEDED, "failed", 0, ("ignored", "unexpected_state")),
        (intent(status="processing"), "failed", 0, ("retry_later", "authorization_in_flight")),
    ],
)
def test_an_authentication_report(state, kind, amount, expected):
    if kind == "capture":
        decision = rules.capture(state, amount, "usd")
    else:
        decision = rules.authentication_ended(state, kind, amount, "usd")
    assert (decision.outcome, decision.reason) == expected


def refund(status: str, amount: int = 300, reference: str | None = "rf_1") -> Refund:
    return Refund("re_1", "acct_1", False, "pi_1", amount, "usd", status, psp_reference=reference)


@pytest.mark.parametrize(
    ("state", "matched", "amount", "others", "expected"),
    [
        (SUCCEEDED, None, 300, False, ("applied", "")),
        (SUCCEEDED, None, 1000, False, ("applied", "")),
        (SUCCEEDED.replace(amount_refunded=800), None, 201, False, ("ignored", "amount_mismatch")),
        (SUCCEEDED, refund("succeeded"), 300, False, ("already_applied", "")),
        (SUCCEEDED, refund("succeeded"), 200, False, ("ignored", "amount_mismatch")),
        (
            SUCCEEDED,
            refund("pending", reference=None),
            300,
            False,
            ("retry_later", "refund_in_flight"),
        ),
        (SUCCEEDED, refund("failed"), 300, False, ("ignored", "refund_failed_here")),
        (SUCCEEDED, None, 300, True, ("retry_later", "refund_in_flight")),
        (intent(), None, 300, False, ("retry_later", "not_captured_yet")),
        (intent(status="canceled"), None, 300, False, ("ignored", "unexpected_state")),
    ],
)
def test_a_refund_report(state, matched, amount, others, expected):
    decision = rules.refund(state, matched, amount, "usd", others)
    assert (decision.outcome, decision.reason) == expected


def test_another_currency_is_never_applied():
    assert rules.capture(intent(), 1000, "eur").reason == "currency_mismatch"
    assert rules.refund(SUCCEEDED, None, 10, "EUR", False).reason == "currency_mismatch"


def test_events_are_read_into_facts_or_ignored_with_a_reason():
    def event(event_type, obj):
        return {"id": "evt_1", "type": event_type, "created": 1, "data": {"object": obj}}

    captured = psp_events.parse(
        "sandbox", event("charge.captured", {"id": "ch_1", "amount_captured": 5})
    )
    refunds = psp_events.parse(
        "stripe",
        event(
            "charge.refunded",
            {"payment_intent": "pi_9", "refunds": {"data": [{"id": "re_a", "amount": 1}]}},
        ),
    )

    [fact] = captured.facts
    assert (fact.psp_reference, fact.captured.amount_captured) == ("ch_1", 5)
    [one] = refunds.facts
    assert (one.event_id, one.refunded.refund_reference) == ("evt_1/re_a", "re_a")
    assert psp_events.parse("stripe", event("customer.created", {})).ignored == "unsupported_event"
    assert (
        psp_events.parse("sandbox", event("charge.captured", {"id": "ch_1"})).ignored == "no_amount"
    )
    assert psp_events.parse("sandbox", {"id": "e", "type": "x"}).ignored == "no_object"


def test_the_end_of_a_customers_authentication_is_read_from_both_psps():
    def event(event_type, obj):
        return {"id": "evt_1", "type": event_type, "created": 1, "data": {"object": obj}}

    charge = {"id": "ch_1", "amount": 700, "currency": "usd", "idempotency_key": "pi_1:ab:sandbox"}
    [authorized] = psp_events.parse("sandbox", event("charge.authorized", charge)).facts
    [failed] = psp_events.parse(
        "sandbox", event("charge.failed", {**charge, "failure_code": "authentication_failed"})
    ).facts
    stripe_intent = {
        "id": "pi_s",
        "status": "requires_capture",
        "amount_capturable": 700,
        "currency": "usd",
        "metadata": {"paymesh_attempt": "pi_1:ab:stripe"},
    }
    [capturable] = psp_events.parse(
        "stripe", event("payment_intent.amount_capturable_updated", stripe_intent)
    ).facts
    failure = {**stripe_intent, "status": "requires_payment_method"}
    [stripe_failed] = psp_events.parse(
        "stripe",
        event(
            "payment_intent.payment_failed",
            {**failure, "last_payment_error": {"code": "payment_intent_authentication_failure"}},
        ),
    ).facts
    declined = psp_events.parse(
        "stripe",
        event(
            "payment_intent.payment_failed",
            {**failure, "last_payment_error": {"code": "card_declined"}},
        ),
    )

    assert (authorized.psp_reference, authorized.authorized.amount_capturable) == ("ch_1", 700)
    assert authorized.attempt_key == "pi_1:ab:sandbox"
    assert (failed.WhichOneof("fact"), failed.authentication_failed.code) == (
        "authentication_failed",
        "authentication_failed",
    )
    assert (capturable.psp_reference, capturable.authorized.amount_capturable) == ("pi_s", 700)
    assert stripe_failed.WhichOneof("fact") == "authentication_failed"
    assert declined.ignored == "not_an_authentication_failure"  # the answer recorded it


@pytest.mark.parametrize("created", [10**15, -(10**12), 2**63, -1, 253402300800])
def test_an_event_created_outside_1970_to_9999_is_unreadable_naming_created(created):
    with pytest.raises(InvalidArgument) as refused:
        read_event(json.dumps({"id": "evt_1", "type": "charge.captured", "created": created}))
    [violation] = refused.value.violations
    assert (violation.field, violation.reason) == ("created", "invalid_event")


@pytest.mark.parametrize("created", [0, 1767225600, 253402300799])
def test_an_event_created_from_1970_to_9999_is_read(created):
    body = json.dumps({"id": "evt_1", "type": "charge.captured", "created": created})
    assert read_event(body)["created"] == created
