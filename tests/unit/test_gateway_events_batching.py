"""webhook_svc's calls to the gateway's PspEventService: the facts of webhooks handled at the
same time leave in one ApplyPspEvents call, a lone fact leaves at once, every webhook gets its
own outcome (or the call's error), and a gateway without ApplyPspEvents is called per fact."""

from __future__ import annotations

import asyncio

import grpc

from paymesh.gateway.v1 import psp_events_pb2
from webhook_svc.inbound.gateway import GatewayEvents

IGNORED = psp_events_pb2.PSP_EVENT_OUTCOME_IGNORED


def fact(n: int) -> psp_events_pb2.ApplyPspEventRequest:
    return psp_events_pb2.ApplyPspEventRequest(psp="sandbox", event_id=f"evt_{n}")


class Error(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode):
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


class Gateway:
    """A PspEventService stub that answers each fact with its event id as the reason, after a
    turn of the loop, and records the calls it got."""

    def __init__(self, fail: grpc.StatusCode | None = None, batches: bool = True):
        self.calls: list[list[str]] = []
        self._fail = fail
        self._batches = batches

    async def ApplyPspEvents(self, request, timeout):
        if not self._batches:
            raise Error(grpc.StatusCode.UNIMPLEMENTED)
        self.calls.append([event.event_id for event in request.events])
        await asyncio.sleep(0.01)
        if self._fail:
            raise Error(self._fail)
        return psp_events_pb2.ApplyPspEventsResponse(
            outcomes=[
                psp_events_pb2.ApplyPspEventResponse(outcome=IGNORED, reason=event.event_id)
                for event in request.events
            ]
        )

    async def ApplyPspEvent(self, request, timeout):
        self.calls.append([request.event_id])
        return psp_events_pb2.ApplyPspEventResponse(outcome=IGNORED, reason=request.event_id)


def test_facts_arriving_while_a_call_is_out_leave_together_each_with_its_outcome():
    gateway = Gateway()

    async def main():
        events = GatewayEvents(gateway, timeout=1)
        first = asyncio.create_task(events.apply(fact(0)))
        await asyncio.sleep(0)  # the first leaves alone, at once
        rest = [asyncio.create_task(events.apply(fact(n))) for n in range(1, 6)]
        return [answer.reason for answer in await asyncio.gather(first, *rest)]

    assert asyncio.run(main()) == [f"evt_{n}" for n in range(6)]
    assert gateway.calls == [["evt_0"], [f"evt_{n}" for n in range(1, 6)]]


def test_a_failed_call_fails_every_webhook_in_it_and_the_next_ones_still_go():
    gateway = Gateway(fail=grpc.StatusCode.UNAVAILABLE)

    async def main():
        events = GatewayEvents(gateway, timeout=1)
        answers = await asyncio.gather(
            *(events.apply(fact(n)) for n in range(3)), return_exceptions=True
        )
        assert all(isinstance(a, grpc.aio.AioRpcError) for a in answers)
        assert answers[0].code() == grpc.StatusCode.UNAVAILABLE
        gateway._fail = None
        return (await events.apply(fact(9))).reason

    assert asyncio.run(main()) == "evt_9"


def test_a_gateway_without_the_batch_call_is_called_per_fact():
    gateway = Gateway(batches=False)

    async def main():
        events = GatewayEvents(gateway, timeout=1)
        return await asyncio.gather(*(events.apply(fact(n)) for n in range(3)))

    assert [a.reason for a in asyncio.run(main())] == ["evt_0", "evt_1", "evt_2"]
    assert gateway.calls == [["evt_0"], ["evt_1"], ["evt_2"]]


def test_no_call_carries_more_than_the_gateways_limit():
    gateway, count = Gateway(), 250

    async def main():
        events = GatewayEvents(gateway, timeout=1)
        await asyncio.gather(*(events.apply(fact(n)) for n in range(count)))

    asyncio.run(main())
    assert max(len(call) for call in gateway.calls) <= GatewayEvents.MAX_BATCH
    assert sum(len(call) for call in gateway.calls) == count
