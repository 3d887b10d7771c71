"""gRPC transport of gateway_svc: decode, call a use case or the repository, encode."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import structlog

from gateway_svc.domain.changes import KeyRef
from gateway_svc.domain.models import Dispute, NewIntent, PaymentIntent, Refund
from gateway_svc.payments import authorize, cancel, capture, refund
from gateway_svc.payments.context import OutcomePending, Payments, for_keyless
from gateway_svc.psp.card_tokens import CardTokens
from gateway_svc.repository.disputes import DisputeRepository
from gateway_svc.repository.payments import PaymentRepository
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
from paymesh.platform.idempotency.rpc import idempotent
from paymesh.platform.idempotency.store import Claim, Idempotency
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
        cancellation_reason=(row.cancellation_reason or "") if row.status == "canceled" else "",
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


def encode(obj: PaymentIntent | Refund):
    return refund_message(obj) if isinstance(obj, Refund) else payment_intent_message(obj)


def key_ref(claim: Claim) -> KeyRef | None:
    """The request's key as the payment statements bind it: only while this claim holds it."""
    if not claim.key:
        return None
    assert claim.fence is not None  # a claim that runs its request holds its key
    return KeyRef(claim.merchant, claim.key, claim.fence)


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """Every POST is `@idempotent`: the caller is authenticated first, then the key answers a
    retry with the object it is bound to, as it is now, or with the error. The use cases bind
    their keys in their own statements. A request on an intent without a key that may have
    moved money is told where its outcome will show, not to retry under a key it never had."""

    def __init__(
        self,
        payments: Payments,
        idempotency: Idempotency,
        callers: Callers,
        disputes: DisputeRepository,
    ):
        self._payments = payments
        self._repository = payments.repository
        self.idempotency = idempotency
        self.callers = callers
        self._disputes = disputes

    async def replay(self, claim: Claim):
        if claim.awaiting_outcome is not None:
            obj = await self._object(claim.awaiting_outcome)
            if isinstance(obj, PaymentIntent) and obj.pending_operation:
                # Replaying the object would show it as before the operation.
                raise OutcomePending(obj.pending_operation, obj.id)
            return encode(obj)  # settled, its key not yet
        return encode(await self._object(claim.replay_object or ""))

    @staticmethod
    def _answer(obj: PaymentIntent | Refund):
        structlog.contextvars.bind_contextvars(correlation_id=obj.id)
        annotate_object(obj.id)
        return encode(obj)

    @staticmethod
    async def _on_intent(claim: Claim, intent_id: str, change: Awaitable[PaymentIntent]):
        try:
            return await change
        except Exception as error:
            if claim.key is None:
                told = for_keyless(error, intent_id)
                if told is not error:
                    raise told from None
            raise

    async def _object(self, object_id: str) -> PaymentIntent | Refund:
        if object_id.startswith("re_"):
            return await self._repository.refund(object_id)
        return await self._repository.intent(object_id)

    @idempotent(binds=True)
    async def CreatePaymentIntent(self, request, context, claim: Claim):
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
        return self._answer(
            await authorize.create(
                self._payments, claim.merchant, new, key_ref(claim), claim.resume_from
            )
        )

    @idempotent(binds=True)
    async def ConfirmPaymentIntent(self, request, context, claim: Claim):
        intent_id = self._intent_id(request.id)
        confirmed = authorize.confirm(
            self._payments,
            claim.merchant,
            intent_id,
            request.payment_method,
            key_ref(claim),
            request.return_url,
        )
        return self._answer(await self._on_intent(claim, intent_id, confirmed))

    @idempotent(binds=True)
    async def CapturePaymentIntent(self, request, context, claim: Claim):
        intent_id = self._intent_id(request.id)
        captured = capture.capture(
            self._payments, claim.merchant, intent_id, request.amount_to_capture, key_ref(claim)
        )
        return self._answer(await self._on_intent(claim, intent_id, captured))

    @idempotent(binds=True)
    async def CancelPaymentIntent(self, request, context, claim: Claim):
        intent_id = self._intent_id(request.id)
        canceled = cancel.cancel(
            self._payments, claim.merchant, intent_id, key_ref(claim), request.cancellation_reason
        )
        return self._answer(await self._on_intent(claim, intent_id, canceled))

    @idempotent(binds=True)
    async def CreateRefund(self, request, context, claim: Claim):
        structlog.contextvars.bind_contextvars(correlation_id=request.payment_intent)
        annotate_object(request.payment_intent)
        made = await refund.refund(
            self._payments,
            claim.merchant,
            request.payment_intent,
            request.amount,
            request.reason,
            key_ref(claim),
        )
        return self._answer(made)

    @staticmethod
    def _intent_id(raw: str) -> str:
        intent_id = require_id(raw, "pi_", "payment_intent")
        structlog.contextvars.bind_contextvars(correlation_id=intent_id)
        annotate_object(intent_id)
        return intent_id

    async def GetRefund(self, request, context):
        merchant = await self.callers.merchant(context)
        refund_id = require_id(request.id, "re_", "refund")
        return refund_message(await self._repository.refund(refund_id, merchant))

    async def ListPaymentIntents(self, request, context):
        merchant = await self.callers.merchant(context)
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
        merchant = await self.callers.merchant(context)
        intent_id = require_id(request.id, "pi_", "payment_intent")
        structlog.contextvars.bind_contextvars(correlation_id=intent_id)
        annotate_object(intent_id)
        return payment_intent_message(await self._repository.intent(intent_id, merchant))

    async def GetDispute(
        self, request: disputes_pb2.GetDisputeRequest, context: grpc.aio.ServicerContext
    ) -> disputes_pb2.Dispute:
        merchant = await self.callers.merchant(context)
        dispute_id = require_id(request.id, "dp_", "dispute")
        dispute = await self._disputes.dispute(dispute_id, merchant)
        structlog.contextvars.bind_contextvars(correlation_id=dispute.payment_intent)
        annotate_object(dispute_id)
        return dispute_message(dispute)

    async def ListDisputes(
        self, request: disputes_pb2.ListDisputesRequest, context: grpc.aio.ServicerContext
    ) -> disputes_pb2.ListDisputesResponse:
        merchant = await self.callers.merchant(context)
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
