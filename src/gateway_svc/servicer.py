"""gRPC transport of gateway_svc: decode, call the repository or domain, encode."""

from __future__ import annotations

import grpc
import structlog

from gateway_svc.repository import PaymentIntentRepository
from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paymesh.platform.errors import NotFound
from paymesh.platform.wire import require_id, timestamp


def payment_intent_message(row) -> gateway_pb2.PaymentIntent:
    error = row.last_payment_error
    return gateway_pb2.PaymentIntent(
        id=row.id,
        amount=row.amount,
        amount_capturable=row.amount_capturable,
        amount_received=row.amount_received,
        amount_refunded=row.amount_refunded,
        currency=row.currency,
        status=row.status,
        payment_method=row.payment_method or "",
        capture_method=row.capture_method,
        psp=row.psp or "",
        last_payment_error=gateway_pb2.PaymentError(**error) if error else None,
        description=row.description or "",
        metadata=row.metadata,
        created=timestamp(row.created_at),
        livemode=row.livemode,
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, intents: PaymentIntentRepository):
        self._intents = intents

    async def GetPaymentIntent(
        self, request: gateway_pb2.GetPaymentIntentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PaymentIntent:
        intent_id = require_id(request.id, "pi_", "payment_intent")
        structlog.contextvars.bind_contextvars(correlation_id=intent_id)
        row = await self._intents.get(intent_id)
        if row is None:
            raise NotFound(f"no such payment_intent: {intent_id!r}", reason="resource_missing")
        structlog.contextvars.bind_contextvars(merchant_id=row.merchant_id)
        return payment_intent_message(row)
