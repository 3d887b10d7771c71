"""Before a card is detached here, gateway_svc is told it may no longer charge it: the gateway
keeps cards' PSP references in memory, and this revocation, in its database, is what a charge
from that memory checks. So a charge requested after the detach answered is never made. The
gateway unreachable: the detach is refused (503) and nothing is detached; a retry is safe
(revoking twice is a no-op)."""

from __future__ import annotations

import grpc

from paymesh.gateway.v1 import card_access_pb2, card_access_pb2_grpc
from paymesh.platform.callers import Merchant
from paymesh.platform.channels import on_behalf_of
from paymesh.platform.problems import Unavailable


class GatewayRevocations:
    def __init__(self, gateway_channel: grpc.aio.Channel, timeout: float = 5.0):
        self._stub = card_access_pb2_grpc.CardAccessServiceStub(gateway_channel)
        self._timeout = timeout

    async def revoke(self, merchant: Merchant, payment_method: str) -> None:
        try:
            await self._stub.RevokePaymentMethod(
                card_access_pb2.RevokePaymentMethodRequest(payment_method=payment_method),
                metadata=on_behalf_of(merchant),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError:
            raise Unavailable(
                "the payment method could not be detached now; nothing was changed. Retry.",
                reason="gateway_unavailable",
            ) from None
