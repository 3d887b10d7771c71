"""gRPC transport of gateway_svc: decode, call a use case or the repository, encode."""

from __future__ import annotations

from dataclasses import replace

import grpc
import structlog

from gateway_svc.dispute_store import DisputeRepository
from gateway_svc.domain.models import Dispute, NewIntent, PaymentIntent, Refund
from gateway_svc.idempotency import Idempotency
from gateway_svc.payments import authorize, cancel, capture, refund
from gateway_svc.payments.context import OutcomePending, Payments, for_keyless
from gateway_svc.psp.card_tokens import CardTokens
from gateway_svc.repository import PaymentRepository
from paymesh.gateway.v1 import (
    card_access_pb2,
    card_access_pb2_grpc,
    disputes_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    merchant_auth_pb2,
    merchant_auth_pb2_grpc,
)
from paymesh.platform.callers import ApiKeyVerifier, Callers
from paymesh.platform.problems import InvalidArgument, Unauthenticated
from paymesh.platform.tracing import annotate_object
from paymesh.platform.wire import require_id, timestamp


def payment_intent_message(row: PaymentIntent) -> gateway_pb2.PaymentIntent:
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
        next_action=_next_action(row.next_action),
    )


def _next_action(action: dict | None) -> gateway_pb2.NextAction | None:
    if action is None:
        return None
    return gateway_pb2.NextAction(
        type=action["type"], redirect_to_url=gateway_pb2.RedirectToUrl(**action["redirect_to_url"])
    )


def refund_message(row: Refund) -> gateway_pb2.Refund:
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


def dispute_message(row: Dispute) -> disputes_pb2.Dispute:
    return disputes_pb2.Dispute(
        id=row.id,
        payment_intent=row.payment_intent,
        amount=row.amount,
        currency=row.currency,
        reason=row.reason,
        status=row.status,
        psp=row.psp,
        psp_reference=row.psp_reference,
        created=timestamp(row.created_at),
        livemode=row.livemode,
    )


def idempotency_key(context: grpc.aio.ServicerContext) -> str | None:
    return dict(context.invocation_metadata() or ()).get("idempotency-key")


def encode(obj: PaymentIntent | Refund):
    return refund_message(obj) if isinstance(obj, Refund) else payment_intent_message(obj)


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        payments: Payments,
        idempotency: Idempotency,
        callers: Callers,
        disputes: DisputeRepository,
    ):
        self._payments = payments
        self._repository = payments.repository
        self._idempotency = idempotency
        self._callers = callers
        self._disputes = disputes

    async def _idempotent(self, context, merchant, method: str, request, run, intent_id=None):
        """Every POST: `run(claim)` at most once per idempotency key; a retry with the key
        answers with the object the key is bound to, as it is now, or the error. The caller
        is authenticated first: nothing about the request is looked at before that. A request
        on `intent_id` without a key that may have moved money is told where its outcome
        will show, not to retry under a key it never had."""
        claim = await self._idempotency.claim(merchant, idempotency_key(context), method, request)
        if claim.awaiting_outcome is not None:
            obj = await self._object(claim.awaiting_outcome)
            if isinstance(obj, PaymentIntent) and obj.pending_operation:
                # Replaying the object would show it as before the operation.
                raise OutcomePending(obj.pending_operation, obj.id)
            claim = replace(claim, replay_object=obj.id)  # settled, its key not yet
        if claim.is_replay:
            await context.send_initial_metadata((("idempotent-replayed", "true"),))
            if claim.replay_error is not None:
                raise self._idempotency.replayed_error(claim)
            return encode(await self._object(claim.replay_object or ""))
        try:
            obj = await run(claim)
        except Exception as error:
            await self._idempotency.settle_error(claim, error)
            if claim.key is None and intent_id:
                told = for_keyless(error, intent_id)
                if told is not error:
                    raise told from None
            raise
        structlog.contextvars.bind_contextvars(correlation_id=obj.id)
        annotate_object(obj.id)
        return encode(obj)

    async def _object(self, object_id: str) -> PaymentIntent | Refund:
        if object_id.startswith("re_"):
            return await self._repository.refund(object_id)
        return await self._repository.intent(object_id)

    async def CreatePaymentIntent(self, request, context):
        merchant = await self._callers.merchant(context)
        new = NewIntent(
            amount=request.amount,
            currency=request.currency,
            payment_method=request.payment_method,
            capture_method=request.capture_method,
            confirm=request.confirm,
            description=request.description,
            metadata=dict(request.metadata),
            return_url=request.return_url,
        )
        return await self._idempotent(
            context,
            merchant,
            "CreatePaymentIntent",
            request,
            lambda claim: authorize.create(
                self._payments, merchant, new, claim.ref, claim.resume_from
            ),
        )

    async def ConfirmPaymentIntent(self, request, context):
        merchant = await self._callers.merchant(context)
        intent_id = self._intent_id(request.id)
        return await self._idempotent(
            context,
            merchant,
            "ConfirmPaymentIntent",
            request,
            lambda claim: authorize.confirm(
                self._payments,
                merchant,
                intent_id,
                request.payment_method,
                claim.ref,
                request.return_url,
            ),
            intent_id=intent_id,
        )

    async def CapturePaymentIntent(self, request, context):
        merchant = await self._callers.merchant(context)
        intent_id = self._intent_id(request.id)
        return await self._idempotent(
            context,
            merchant,
            "CapturePaymentIntent",
            request,
            lambda claim: capture.capture(
                self._payments, merchant, intent_id, request.amount_to_capture, claim.ref
            ),
            intent_id=intent_id,
        )

    async def CancelPaymentIntent(self, request, context):
        merchant = await self._callers.merchant(context)
        intent_id = self._intent_id(request.id)
        return await self._idempotent(
            context,
            merchant,
            "CancelPaymentIntent",
            request,
            lambda claim: cancel.cancel(self._payments, merchant, intent_id, claim.ref),
            intent_id=intent_id,
        )

    async def CreateRefund(self, request, context):
        merchant = await self._callers.merchant(context)
        structlog.contextvars.bind_contextvars(correlation_id=request.payment_intent)
        annotate_object(request.payment_intent)
        return await self._idempotent(
            context,
            merchant,
            "CreateRefund",
            request,
            lambda claim: refund.refund(
                self._payments,
                merchant,
                request.payment_intent,
                request.amount,
                request.reason,
                claim.ref,
            ),
        )

    @staticmethod
    def _intent_id(raw: str) -> str:
        intent_id = require_id(raw, "pi_", "payment_intent")
        structlog.contextvars.bind_contextvars(correlation_id=intent_id)
        annotate_object(intent_id)
        return intent_id

    async def GetRefund(self, request, context):
        merchant = await self._callers.merchant(context)
        refund_id = require_id(request.id, "re_", "refund")
        return refund_message(await self._repository.refund(refund_id, merchant))

    async def ListPaymentIntents(self, request, context):
        merchant = await self._callers.merchant(context)
        limit = request.limit or 10
        if not 1 <= limit <= 100:
            raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
        rows, has_more = await self._repository.page(merchant, limit, request.starting_after)
        return gateway_pb2.ListPaymentIntentsResponse(
            data=[payment_intent_message(row) for row in rows], has_more=has_more
        )

    async def GetPaymentIntent(
        self, request: gateway_pb2.GetPaymentIntentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PaymentIntent:
        merchant = await self._callers.merchant(context)
        intent_id = require_id(request.id, "pi_", "payment_intent")
        structlog.contextvars.bind_contextvars(correlation_id=intent_id)
        annotate_object(intent_id)
        return payment_intent_message(await self._repository.intent(intent_id, merchant))

    async def GetDispute(
        self, request: disputes_pb2.GetDisputeRequest, context: grpc.aio.ServicerContext
    ) -> disputes_pb2.Dispute:
        merchant = await self._callers.merchant(context)
        dispute_id = require_id(request.id, "dp_", "dispute")
        dispute = await self._disputes.dispute(dispute_id, merchant)
        structlog.contextvars.bind_contextvars(correlation_id=dispute.payment_intent)
        annotate_object(dispute_id)
        return dispute_message(dispute)

    async def ListDisputes(
        self, request: disputes_pb2.ListDisputesRequest, context: grpc.aio.ServicerContext
    ) -> disputes_pb2.ListDisputesResponse:
        merchant = await self._callers.merchant(context)
        limit = request.limit or 10
        if not 1 <= limit <= 100:
            raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
        if request.payment_intent:  # an id of another kind has no disputes: an empty page
            require_id(request.payment_intent, "", "payment_intent", "payment_intent")
        rows, has_more = await self._disputes.page(
            merchant, limit, request.starting_after, request.payment_intent
        )
        return disputes_pb2.ListDisputesResponse(
            data=[dispute_message(row) for row in rows], has_more=has_more
        )


# The services that resolve their merchants' API keys here (platform.merchant_auth); the
# gateway checks its own in process.
API_KEY_CHECKERS = {"vault", "rebill", "webhook"}


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
        self._callers.service(context, allowed=API_KEY_CHECKERS)
        merchant = await self._merchants.verify(request.api_key) if request.api_key else None
        if merchant is None:
            raise Unauthenticated("invalid API key", reason="invalid_api_key")
        return merchant_auth_pb2.AuthenticateApiKeyResponse(
            merchant_id=merchant.id, livemode=merchant.livemode
        )


class CardAccessServicer(card_access_pb2_grpc.CardAccessServiceServicer):
    """Internal: the vault revokes a payment method here before it detaches it."""

    def __init__(self, repository: PaymentRepository, card_tokens: CardTokens, callers: Callers):
        self._repository = repository
        self._card_tokens = card_tokens
        self._callers = callers

    async def RevokePaymentMethod(
        self,
        request: card_access_pb2.RevokePaymentMethodRequest,
        context: grpc.aio.ServicerContext,
    ) -> card_access_pb2.RevokePaymentMethodResponse:
        self._callers.service(context, allowed={"vault"})
        merchant = await self._callers.merchant(context)
        payment_method = require_id(request.payment_method, "pm_", "payment_method")
        structlog.contextvars.bind_contextvars(correlation_id=payment_method)
        annotate_object(payment_method)
        await self._repository.revoke_payment_method(merchant, payment_method)
        self._card_tokens.forget(payment_method)
        return card_access_pb2.RevokePaymentMethodResponse()
