"""The gateway's ApplyPspEvents: each event gets its own outcome, in order. An invalid event is
ignored and one whose application fails is left for the PSP to send again, without failing
the other events of the call."""

from __future__ import annotations

import asyncio

from gateway_svc.domain.psp_events import ALREADY, PspEventResult
from gateway_svc.psp_events import PspEventServicer
from paymesh.gateway.v1 import psp_events_pb2


class Repository:
    """Applies every event as already applied, except the one named `broken` (a database
    error, say)."""

    def __init__(self, broken: str):
        self.broken = broken
        self.applied: list[str] = []

    async def apply_psp_event(self, event):
        if event.event_id == self.broken:
            raise RuntimeError("the database went away for this one")
        self.applied.append(event.event_id)
        return PspEventResult(ALREADY)


class Callers:
    def service(self, context, allowed):
        assert allowed == {"webhook"}


def capture(event_id: str, reference: str = "ch_1") -> psp_events_pb2.ApplyPspEventRequest:
    return psp_events_pb2.ApplyPspEventRequest(
        psp="sandbox",
        event_id=event_id,
        psp_reference=reference,
        captured=psp_events_pb2.Captured(amount_captured=100, currency="usd"),
    )


def test_each_event_has_its_own_outcome_and_one_failure_fails_no_other():
    repository = Repository(broken="evt_broken")
    servicer = PspEventServicer(repository, Callers())
    request = psp_events_pb2.ApplyPspEventsRequest(
        events=[
            capture("evt_1"),
            capture("evt_invalid", reference=""),
            capture("evt_broken"),
            capture("evt_2"),
        ]
    )
    answer = asyncio.run(servicer.ApplyPspEvents(request, context=None))
    assert [(o.outcome, o.reason) for o in answer.outcomes] == [
        (psp_events_pb2.PSP_EVENT_OUTCOME_ALREADY_APPLIED, ""),
        (psp_events_pb2.PSP_EVENT_OUTCOME_IGNORED, "invalid_event"),
        (psp_events_pb2.PSP_EVENT_OUTCOME_RETRY_LATER, "gateway_error"),
        (psp_events_pb2.PSP_EVENT_OUTCOME_ALREADY_APPLIED, ""),
    ]
    assert sorted(repository.applied) == ["evt_1", "evt_2"]
