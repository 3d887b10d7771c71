"""The gateway's PspEventService, as webhook_svc calls it: the facts of PSP webhooks handled
at the same time, applied in one call."""

from __future__ import annotations

import grpc

from paymesh.gateway.v1 import psp_events_pb2, psp_events_pb2_grpc
from paymesh.platform.coalesce import Coalescer

GATEWAY_TIMEOUT_SECONDS = 5.0


class GatewayEvents:
    """Applies facts through the gateway's PspEventService. The facts of webhooks handled at
    the same time go in one call (ApplyPspEvents, coalesced): every capture of ours comes back
    as a webhook, so under load they arrive side by side, and a call per fact cost the
    gateway more than applying it."""

    MAX_BATCH = 100  # the gateway's limit per call

    def __init__(self, stub: psp_events_pb2_grpc.PspEventServiceStub, timeout: float):
        self._stub = stub
        self._timeout = timeout
        self._calls = Coalescer(self._call, self.MAX_BATCH)

    async def apply(
        self, fact: psp_events_pb2.ApplyPspEventRequest
    ) -> psp_events_pb2.ApplyPspEventResponse:
        """The gateway's answer; raises grpc.aio.AioRpcError as the call would."""
        return await self._calls.submit(fact)

    async def _call(self, facts: list) -> list[psp_events_pb2.ApplyPspEventResponse]:
        try:
            answer = await self._stub.ApplyPspEvents(
                psp_events_pb2.ApplyPspEventsRequest(events=facts), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # A gateway older than ApplyPspEvents (a rolling deploy): one call per fact.
            return [await self._stub.ApplyPspEvent(f, timeout=self._timeout) for f in facts]
        return list(answer.outcomes)
