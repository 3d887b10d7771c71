"""gRPC transport of gateway_svc: decode, call the repository or domain, encode."""

from __future__ import annotations

import grpc
import structlog

from gateway_svc.repository import PaymentIntentRepository
from paymesh.gateway.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    merchant_auth_pb2,
    merchant_auth_pb2_grpc,
)
from paymesh.platform.callers import ApiKeyVerifier, Callers
from paymesh.platform.errors import NotFound, Unauthenticated
from paymesh.platform.service_auth import SERVICES
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
    def __init__(self, intents: PaymentIntentRepository, callers: Callers):
        self._intents = intents
        self._callers = callers

    async def GetPaymentIntent(
        self, request: gateway_pb2.GetPaymentIntentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PaymentIntent:
        merchant = await self._callers.merchant(context)
        intent_id = require_id(request.id, "pi_", "payment_intent")
        structlog.contextvars.bind_contextvars(correlation_id=intent_id)
        row = await self._intents.get(intent_id, merchant)
        if row is None:
            raise NotFound(f"no such payment_intent: {intent_id!r}", reason="resource_missing")
        return payment_intent_message(row)


class MerchantAuthServicer(merchant_auth_pb2_grpc.MerchantAuthServiceServicer):
    """Internal: other services resolve merchants' API keys here."""

    def __init__(self, merchants: ApiKeyVerifier, callers: Callers):
        self._merchants = merchants
        self._callers = callers

    async def AuthenticateApiKey(
        self,
        request: merchant_auth_pb2.AuthenticateApiKeyRequest,
        context: grpc.aio.ServicerContext,
    ) -> merchant_auth_pb2.AuthenticateApiKeyResponse:
        self._callers.service(context, allowed=set(SERVICES))
        merchant = await self._merchants.verify(request.api_key) if request.api_key else None
        if merchant is None:
            raise Unauthenticated("invalid API key", reason="invalid_api_key")
        return merchant_auth_pb2.AuthenticateApiKeyResponse(
            merchant_id=merchant.id, livemode=merchant.livemode
        )
