"""gRPC transport of webhook_svc: decode, call the repository or domain, encode."""

from __future__ import annotations

import grpc

from paymesh.platform.callers import Callers
from paymesh.platform.errors import NotFound
from paymesh.platform.wire import require_id, timestamp
from paymesh.webhook.v1 import webhook_pb2, webhook_pb2_grpc
from webhook_svc.repository import WebhookEndpointRepository


def webhook_endpoint_message(row) -> webhook_pb2.WebhookEndpoint:
    return webhook_pb2.WebhookEndpoint(
        id=row.id,
        url=row.url,
        enabled_events=row.enabled_events,
        status=row.status,
        created=timestamp(row.created_at),
        livemode=row.livemode,
    )


class WebhookServicer(webhook_pb2_grpc.WebhookServiceServicer):
    def __init__(self, endpoints: WebhookEndpointRepository, callers: Callers):
        self._endpoints = endpoints
        self._callers = callers

    async def GetWebhookEndpoint(
        self, request: webhook_pb2.GetWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> webhook_pb2.WebhookEndpoint:
        merchant = await self._callers.merchant(context)
        endpoint_id = require_id(request.id, "we_", "webhook_endpoint")
        row = await self._endpoints.get(endpoint_id, merchant)
        if row is None:
            raise NotFound(f"no such webhook_endpoint: {endpoint_id!r}", reason="resource_missing")
        return webhook_endpoint_message(row)
