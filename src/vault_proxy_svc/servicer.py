"""gRPC transport of vault_proxy_svc: decode, call the vault, encode."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from google.protobuf.json_format import MessageToDict, ParseDict

from paymesh.platform.callers import Callers, Merchant
from paymesh.platform.errors import InvalidArgument
from paymesh.platform.idempotency.rpc import idempotent
from paymesh.platform.idempotency.store import Claim, Idempotency, NewKey
from paymesh.platform.wire import require_id, timestamp
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from vault_proxy_svc.cards import Card, validate_card
from vault_proxy_svc.metrics import TOKENIZATIONS
from vault_proxy_svc.models import PaymentMethod
from vault_proxy_svc.vault import Vault


def payment_method_message(card: PaymentMethod) -> vault_pb2.PaymentMethod:
    message = vault_pb2.PaymentMethod(
        id=card.id,
        type="card",
        card=vault_pb2.Card(
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            fingerprint=card.fingerprint,
        ),
        created=timestamp(card.created_at),
        livemode=card.livemode,
    )
    if card.billing_details:
        ParseDict(card.billing_details, message.billing_details)
    return message


def _validated(
    request: vault_pb2.CreatePaymentMethodRequest, billing: dict[str, Any]
) -> tuple[Card, None] | tuple[None, InvalidArgument]:
    """The card, or why it is refused (raised only once the request runs: a retry under an
    idempotency key answers as the first request did)."""
    try:
        card = validate_card(
            payment_type=request.type,
            number=request.card.number,
            exp_month=request.card.exp_month,
            exp_year=request.card.exp_year,
            cvc=request.card.cvc,
            billing=billing,
            today=datetime.now(UTC).date(),
        )
    except InvalidArgument as refused:
        return None, refused
    return card, None


class VaultServicer(vault_pb2_grpc.VaultServiceServicer):
    """Tokenize and detach are `@idempotent`: at most once per key; a retry answers with the
    payment method the key is bound to, as it is now, or with the error. The statement that
    makes or detaches the payment method binds the key."""

    def __init__(self, vault: Vault, callers: Callers, idempotency: Idempotency):
        self._vault = vault
        self.callers = callers
        self.idempotency = idempotency

    async def replay(self, claim: Claim) -> vault_pb2.PaymentMethod:
        token = claim.replay_object or ""
        structlog.contextvars.bind_contextvars(correlation_id=token)
        return payment_method_message(await self._vault.replay(claim.merchant, token))

    @idempotent(binds=True, first_use=True)
    async def CreatePaymentMethod(
        self,
        request: vault_pb2.CreatePaymentMethodRequest,
        context: grpc.aio.ServicerContext,
        key: Claim | NewKey,
    ) -> vault_pb2.PaymentMethod | None:
        billing = MessageToDict(request.billing_details, preserving_proto_field_name=True)
        card, invalid = _validated(request, billing)
        if isinstance(key, NewKey) and card is None:
            return None  # a refusal is remembered under a claim
        if card is None:
            TOKENIZATIONS.labels("invalid").inc()
            raise invalid
        # The common case, a valid card under a new key, in one statement (a NewKey: None
        # when the key turns out to be used, and the request goes through a claim).
        stored = await self._vault.tokenize(
            key.merchant, card, billing, key if key.key is not None else None
        )
        if stored is None:
            return None
        TOKENIZATIONS.labels("ok").inc()
        structlog.contextvars.bind_contextvars(correlation_id=stored.id)
        return payment_method_message(stored)

    async def GetPaymentMethod(
        self, request: vault_pb2.GetPaymentMethodRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.PaymentMethod:
        merchant = await self.callers.merchant(context)
        token = require_id(request.id, "pm_", "payment_method")
        structlog.contextvars.bind_contextvars(correlation_id=token)
        return payment_method_message(await self._vault.get(merchant, token))

    @idempotent(binds=True)
    async def DetachPaymentMethod(
        self,
        request: vault_pb2.DetachPaymentMethodRequest,
        context: grpc.aio.ServicerContext,
        claim: Claim,
    ) -> vault_pb2.PaymentMethod:
        token = require_id(request.id, "pm_", "payment_method")
        structlog.contextvars.bind_contextvars(correlation_id=token)
        merchant = claim.merchant
        detached = await self._vault.detach(
            merchant, token, f"merchant:{merchant.id}", claim if claim.key else None
        )
        return payment_method_message(detached)


class VaultInternalServicer(vault_pb2_grpc.VaultInternalServiceServicer):
    """For gateway_svc only: card references at PSPs, cards made again where a PSP lost
    them, and masked cards for the back office's screens."""

    def __init__(self, vault: Vault, callers: Callers):
        self._vault = vault
        self._callers = callers

    async def GetPspToken(
        self, request: vault_pb2.GetPspTokenRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.GetPspTokenResponse:
        actor, merchant, token = await self._card_of(request, context)
        reference, cached = await self._vault.provisioning.psp_token(
            merchant, token, request.psp, actor=actor, reason=request.reason
        )
        return vault_pb2.GetPspTokenResponse(
            psp=request.psp, psp_reference=reference, cached=cached
        )

    async def ReprovisionPspToken(
        self, request: vault_pb2.ReprovisionPspTokenRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.ReprovisionPspTokenResponse:
        actor, merchant, token = await self._card_of(request, context)
        if not request.unknown_reference:
            raise InvalidArgument.for_field(
                "unknown_reference", "missing", "unknown_reference is required"
            )
        reference, reprovisioned = await self._vault.provisioning.reprovision(
            merchant, token, request.psp, request.unknown_reference, actor, request.reason
        )
        return vault_pb2.ReprovisionPspTokenResponse(
            psp=request.psp, psp_reference=reference, reprovisioned=reprovisioned
        )

    async def GetCardSummaries(
        self, request: vault_pb2.GetCardSummariesRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.GetCardSummariesResponse:
        """Masked cards of any merchant for the back office (through the gateway): no
        merchant is vouched for, and nothing is decrypted."""
        self._callers.service(context, allowed={"gateway"})
        summaries = await self._vault.summaries(list(request.payment_methods))
        return vault_pb2.GetCardSummariesResponse(
            cards=[
                vault_pb2.CardSummary(
                    payment_method=card.payment_method,
                    brand=card.brand,
                    last4=card.last4,
                    fingerprint=card.fingerprint,
                    exp_month=card.exp_month,
                    exp_year=card.exp_year,
                )
                for card in summaries
            ]
        )

    async def _card_of(self, request, context) -> tuple[str, Merchant, str]:
        """(actor, merchant, token) of a request about a card at a PSP, from the gateway only."""
        caller = self._callers.service(context, allowed={"gateway"})
        merchant = await self._callers.merchant(context)
        token = require_id(request.payment_method, "pm_", "payment_method", "payment_method")
        if not request.psp:
            raise InvalidArgument.for_field("psp", "missing", "psp is required")
        structlog.contextvars.bind_contextvars(correlation_id=token)
        return f"service:{caller.name}", merchant, token
