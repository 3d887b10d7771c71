"""gRPC transport of vault_proxy_svc: decode, call the repository or domain, encode."""

from __future__ import annotations

import grpc
import structlog

from paymesh.platform.errors import NotFound
from paymesh.platform.wire import require_id, timestamp
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from vault_proxy_svc.repository import PaymentMethodRepository


def payment_method_message(row) -> vault_pb2.PaymentMethod:
    return vault_pb2.PaymentMethod(
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


class VaultServicer(vault_pb2_grpc.VaultServiceServicer):
    def __init__(self, payment_methods: PaymentMethodRepository):
        self._payment_methods = payment_methods

    async def GetPaymentMethod(
        self, request: vault_pb2.GetPaymentMethodRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.PaymentMethod:
        token = require_id(request.id, "pm_", "payment_method")
        structlog.contextvars.bind_contextvars(correlation_id=token)
        row = await self._payment_methods.get(token)
        if row is None:
            raise NotFound(f"no such payment_method: {token!r}", reason="resource_missing")
        structlog.contextvars.bind_contextvars(merchant_id=row.merchant_id)
        return payment_method_message(row)
