"""webhook_svc.domain.echoes: which PSP webhooks only echo a success the gateway recorded."""

from __future__ import annotations

import dataclasses

from webhook_svc.domain.echoes import Capture, RecordedSuccess, echoed_intent, echoes

SHOWN = {
    "id": "pi_1",
    "object": "payment_intent",
    "status": "succeeded",
    "psp": "sandbox",
    "amount": "1300",
    "amount_received": "1300",
    "currency": "usd",
}
RECORDED = RecordedSuccess.of_event("ch_1", SHOWN)
CAPTURE = Capture(psp="sandbox", psp_reference="ch_1", amount=1300, currency="usd")


def test_a_success_is_read_from_the_event_as_the_api_shows_it():
    read = RecordedSuccess.of_event("ch_1", SHOWN)
    assert read == RecordedSuccess("pi_1", "sandbox", "ch_1", "succeeded", 1300, "usd")
    assert RecordedSuccess.of_event("ch_1", {**SHOWN, "amount_received": 1300}) == RECORDED
    for unreadable in ("13.00", "-1", "", None, True, "１３"):
        shown = {**SHOWN, "amount_received": unreadable}
        assert RecordedSuccess.of_event("ch_1", shown).amount_received is None


def test_the_exact_capture_of_the_recorded_success_is_an_echo():
    assert echoes(CAPTURE, RECORDED)
    assert echoes(dataclasses.replace(CAPTURE, currency="USD"), RECORDED)


def test_anything_else_is_not():
    others = [
        dataclasses.replace(CAPTURE, amount=1299),
        dataclasses.replace(CAPTURE, amount=1301),
        dataclasses.replace(CAPTURE, currency="eur"),
        dataclasses.replace(CAPTURE, currency=""),
        dataclasses.replace(CAPTURE, psp="stripe"),
        dataclasses.replace(CAPTURE, psp_reference="ch_2"),
        dataclasses.replace(CAPTURE, psp_reference=""),
    ]
    for capture in others:
        assert not echoes(capture, RECORDED), capture
    assert not echoes(CAPTURE, None)
    for field, value in [
        ("status", "requires_capture"),
        ("amount_received", None),
        ("payment_intent", ""),
        ("psp_reference", ""),
    ]:
        assert not echoes(CAPTURE, dataclasses.replace(RECORDED, **{field: value})), field
    zero = dataclasses.replace(CAPTURE, amount=0)
    assert not echoes(zero, dataclasses.replace(RECORDED, amount_received=0))


def test_a_webhook_is_an_echo_only_when_every_fact_is_one_of_the_same_payment():
    recorded = {"ch_1": RECORDED}
    assert echoed_intent([CAPTURE], recorded) == "pi_1"
    assert echoed_intent([CAPTURE, CAPTURE], recorded) == "pi_1"
    assert echoed_intent([], recorded) is None
    assert echoed_intent([CAPTURE, None], recorded) is None  # a refund, a dispute: news
    assert echoed_intent([CAPTURE], {}) is None  # the gateway's event has not come (yet)
    other = dataclasses.replace(CAPTURE, psp_reference="ch_2")
    second = dataclasses.replace(RECORDED, payment_intent="pi_2", psp_reference="ch_2")
    assert echoed_intent([other], {"ch_2": second}) == "pi_2"
    assert echoed_intent([CAPTURE, other], {"ch_1": RECORDED, "ch_2": second}) is None
    assert echoed_intent([CAPTURE, other], recorded) is None
