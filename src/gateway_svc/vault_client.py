"""gateway_svc's view of the vault: a card's token at a given PSP, asked for on the merchant's
behalf with the gateway's service identity. Vault errors become PSP outcomes."""

from __future__ import annotations

import grpc

from gateway_svc.connectors import PspDeclined, PspRetryable
from paymesh.platform.callers import Merchant
from paymesh.platform.channels import on_behalf_of
from paymesh.platform.errors import InvalidArgument
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc


class VaultClient:
    def __init__(self, channel: grpc.aio.Channel):
        self._stub = vault_pb2_grpc.VaultInternalServiceStub(channel)

    async def psp_token(
        self, merchant: Merchant, payment_method: str, psp: str, reason: str
    ) -> str:
        try:
            reply = await self._stub.GetPspToken(
                vault_pb2.GetPspTokenRequest(payment_method=payment_method, psp=psp, reason=reason),
                metadata=on_behalf_of(merchant),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise InvalidArgument.for_field(
                    "payment_method", "resource_missing", "no such payment_method"
                ) from None
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                # The PSP refused the card itself when the vault created it there.
                raise PspDeclined("generic_decline", "Your card was declined.", "hard") from None
            raise PspRetryable(f"vault: {code.name}") from None
        return reply.psp_reference
