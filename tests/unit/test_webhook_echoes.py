"""webhook_svc.domain.echoes: which PSP webhooks only echo a success the gateway recorded."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from webhook_svc.domain.echoes import Capture, RecordedSuccess, echoed_intent, echoes
from webhook_svc.inbound.recorded import RecordedSuccesses

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


# --- the inbound side's wait for the gateway's event (webhook_svc.inbound.recorded) ---------


class StoredEvents:
    """webhook.events as the lookup's statement reads it: the successes stored so far."""

    def __init__(self):
        self.stored: dict[str, dict] = {}
        self.reads = 0

    async def all(self, statement, params, prepare=True):
        self.reads += 1
        wanted = [r["reference"] for r in json.loads(params["references"])]
        return [
            {"reference": r, "object": self.stored[r], "traceparent": None}
            for r in wanted
            if r in self.stored
        ]


def test_a_lookup_waits_for_a_success_the_intake_stores_meanwhile_and_takes_it_as_stored():
    async def scenario():
        events = StoredEvents()
        recorded = RecordedSuccesses(events, wait_seconds=5)
        waiting = asyncio.create_task(recorded.of("ch_1", wait=True))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        events.stored["ch_1"] = SHOWN
        recorded.arrived([("ch_2", {**SHOWN, "id": "pi_2"}, ""), ("ch_1", SHOWN, "00-tp")])
        found = await asyncio.wait_for(waiting, 1)
        return found, events.reads, recorded._waiting

    (success, traceparent), reads, waiting = asyncio.run(scenario())
    assert (success, traceparent, reads, waiting) == (RECORDED, "00-tp", 1, {})


def test_a_lookup_that_waits_in_vain_finds_nothing_and_leaves_no_waiter():
    async def scenario():
        events = StoredEvents()
        recorded = RecordedSuccesses(events, wait_seconds=0.05)
        found = await recorded.of("ch_1", wait=True)
        unwaited = await recorded.of("ch_1")
        return found, unwaited, recorded._waiting, events.reads

    assert asyncio.run(scenario()) == (None, None, {}, 2)
