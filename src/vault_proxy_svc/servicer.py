"""gRPC transport of vault_proxy_svc: decode, call the vault, encode."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import structlog
from google.protobuf.json_format import MessageToDict, ParseDict

from paymesh.platform.callers import Callers
from paymesh.platform.errors import InvalidArgument
from paymesh.platform.wire import require_id, timestamp
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from vault_proxy_svc.cards import validate_card
from vault_proxy_svc.metrics import TOKENIZATIONS
from vault_proxy_svc.vault import Vault


def payment_method_message(row) -> vault_pb2.PaymentMethod:
    message = vault_pb2.PaymentMethod(
        id=row.id,
        type="card",
        card=vault_pb2.Card(
            brand=row.brand,
            last4=row.last4,
            exp_month=row.exp_month,
            exp_year=row.exp_year,
            fingerprint=row.fingerprint,
        ),
        created=timestamp(row.created_at),
        livemode=row.livemode,
    )
    if row.billing_details:
        ParseDict(row.billing_details, message.billing_details)
    return message


class VaultServicer(vault_pb2_grpc.VaultServiceServicer):
    def __init__(self, vault: Vault, callers: Callers):
        self._vault = vault
        self._callers = callers

    async def CreatePaymentMethod(
        self, request: vault_pb2.CreatePaymentMethodRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.PaymentMethod:
        merchant = await self._callers.merchant(context)
        billing = request.billing_details
        try:
            card = validate_card(
                payment_type=request.type,
                number=request.card.number,
                exp_month=request.card.exp_month,
                exp_year=request.card.exp_year,
                cvc=request.card.cvc,
                email=billing.email,
                country=billing.address.country,
                today=datetime.now(UTC).date(),
            )
        except InvalidArgument:
            TOKENIZATIONS.labels("invalid").inc()
            raise
        row = await self._vault.tokenize(
            merchant, card, MessageToDict(billing, preserving_proto_field_name=True)
        )
        structlog.contextvars.bind_contextvars(correlation_id=row.id)
        TOKENIZATIONS.labels("ok").inc()
        return payment_method_message(row)

    async def GetPaymentMethod(
        self, request: vault_pb2.GetPaymentMethodRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.PaymentMethod:
        merchant = await self._callers.merchant(context)
        token = require_id(request.id, "pm_", "payment_method")
        structlog.contextvars.bind_contextvars(correlation_id=token)
        return payment_method_message(await self._vault.get(merchant, token))

    async def DetachPaymentMethod(
        self, request: vault_pb2.DetachPaymentMethodRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.PaymentMethod:
        merchant = await self._callers.merchant(context)
        token = require_id(request.id, "pm_", "payment_method")
        structlog.contextvars.bind_contextvars(correlation_id=token)
        row = await self._vault.detach(merchant, token, actor=f"merchant:{merchant.id}")
        return payment_method_message(row)


class VaultInternalServicer(vault_pb2_grpc.VaultInternalServiceServicer):
    """For gateway_svc only: card references at PSPs."""

    def __init__(self, vault: Vault, callers: Callers):
        self._vault = vault
        self._callers = callers

    async def GetPspToken(
        self, request: vault_pb2.GetPspTokenRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.GetPspTokenResponse:
        caller = self._callers.service(context, allowed={"gateway"})
        merchant = await self._callers.merchant(context)
        token = require_id(request.payment_method, "pm_", "payment_method", "payment_method")
        if not request.psp:
            raise InvalidArgument.for_field("psp", "missing", "psp is required")
        structlog.contextvars.bind_contextvars(correlation_id=token)
        reference, cached = await self._vault.psp_token(
            merchant, token, request.psp, actor=f"service:{caller.name}", reason=request.reason
        )
        return vault_pb2.GetPspTokenResponse(
            psp=request.psp, psp_reference=reference, cached=cached
        )
