"""gRPC transport of gateway_svc: decode, call the repository or domain, encode."""

from __future__ import annotations

import grpc
import structlog

from gateway_svc.idempotency import Idempotency
from gateway_svc.payments import NewIntent, Payments
from gateway_svc.repository import PaymentIntentRepository
from paymesh.gateway.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    merchant_auth_pb2,
    merchant_auth_pb2_grpc,
)
from paymesh.platform.callers import ApiKeyVerifier, Callers
from paymesh.platform.errors import InvalidArgument, NotFound, Unauthenticated
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


def refund_message(row) -> gateway_pb2.Refund:
    return gateway_pb2.Refund(
        id=row.id,
        amount=row.amount,
        currency=row.currency,
        payment_intent=row.payment_intent,
        status=row.status,
        reason=row.reason or "",
        created=timestamp(row.created_at),
        livemode=row.livemode,
    )


def idempotency_key(context: grpc.aio.ServicerContext) -> str | None:
    return dict(context.invocation_metadata() or ()).get("idempotency-key")


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        intents: PaymentIntentRepository,
        payments: Payments,
        idempotency: Idempotency,
        callers: Callers,
    ):
        self._intents = intents
        self._payments = payments
        self._idempotency = idempotency
        self._callers = callers

    async def _idempotent(self, context, method: str, request, run, message_type):
        """Runs `run(merchant, claim)` at most once per idempotency key; replays otherwise."""
        merchant = await self._callers.merchant(context)
        claim = await self._idempotency.claim(merchant, idempotency_key(context), method, request)
        if claim.replay is not None:
            await context.send_initial_metadata((("idempotent-replayed", "true"),))
            if claim.replay_is_error:
                raise self._idempotency.replayed_error(claim)
            return message_type.FromString(claim.replay)
        try:
            return await run(merchant, claim)
        except Exception as error:
            await self._idempotency.settle_error(claim, error)
            raise

    async def CreatePaymentIntent(self, request, context):
        async def run(merchant, claim):
            row = await self._payments.create(
                merchant,
                NewIntent(
                    amount=request.amount,
                    currency=request.currency,
                    payment_method=request.payment_method,
                    capture_method=request.capture_method,
                    confirm=request.confirm,
                    description=request.description,
                    metadata=dict(request.metadata),
                ),
                claim,
            )
            structlog.contextvars.bind_contextvars(correlation_id=row.id)
            return payment_intent_message(row)

        return await self._idempotent(
            context, "CreatePaymentIntent", request, run, gateway_pb2.PaymentIntent
        )

    async def ConfirmPaymentIntent(self, request, context):
        intent_id = require_id(request.id, "pi_", "payment_intent")
        structlog.contextvars.bind_contextvars(correlation_id=intent_id)

        async def run(merchant, claim):
            row = await self._payments.confirm(merchant, intent_id, request.payment_method, claim)
            return payment_intent_message(row)

        return await self._idempotent(
            context, "ConfirmPaymentIntent", request, run, gateway_pb2.PaymentIntent
        )

    async def CapturePaymentIntent(self, request, context):
        intent_id = require_id(request.id, "pi_", "payment_intent")
        structlog.contextvars.bind_contextvars(correlation_id=intent_id)

        async def run(merchant, claim):
            row = await self._payments.capture(
                merchant, intent_id, request.amount_to_capture, claim
            )
            return payment_intent_message(row)

        return await self._idempotent(
            context, "CapturePaymentIntent", request, run, gateway_pb2.PaymentIntent
        )

    async def CancelPaymentIntent(self, request, context):
        intent_id = require_id(request.id, "pi_", "payment_intent")
        structlog.contextvars.bind_contextvars(correlation_id=intent_id)

        async def run(merchant, claim):
            return payment_intent_message(await self._payments.cancel(merchant, intent_id, claim))

        return await self._idempotent(
            context, "CancelPaymentIntent", request, run, gateway_pb2.PaymentIntent
        )

    async def CreateRefund(self, request, context):
        structlog.contextvars.bind_contextvars(correlation_id=request.payment_intent)

        async def run(merchant, claim):
            row = await self._payments.refund(
                merchant, request.payment_intent, request.amount, request.reason, claim
            )
            return refund_message(row)

        return await self._idempotent(context, "CreateRefund", request, run, gateway_pb2.Refund)

    async def GetRefund(self, request, context):
        merchant = await self._callers.merchant(context)
        refund_id = require_id(request.id, "re_", "refund")
        return refund_message(await self._payments.get_refund(merchant, refund_id))

    async def ListPaymentIntents(self, request, context):
        merchant = await self._callers.merchant(context)
        limit = request.limit or 10
        if not 1 <= limit <= 100:
            raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
        rows, has_more = await self._intents.page(merchant, limit, request.starting_after)
        return gateway_pb2.ListPaymentIntentsResponse(
            data=[payment_intent_message(row) for row in rows], has_more=has_more
        )

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
