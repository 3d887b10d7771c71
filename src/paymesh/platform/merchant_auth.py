"""API-key checks for services other than the gateway, which owns merchants and keys: they ask
gateway_svc's internal MerchantAuthService, and cache its answers briefly."""

from __future__ import annotations

import grpc

from paymesh.gateway.v1 import merchant_auth_pb2, merchant_auth_pb2_grpc
from paymesh.platform.callers import ApiKeyVerifier, CachedApiKeyVerifier, Callers, Merchant
from paymesh.platform.channels import service_channel
from paymesh.platform.problems import Unavailable
from paymesh.platform.service_auth import TokenIssuer, TokenVerifier


class GatewayApiKeyVerifier:
    def __init__(self, channel: grpc.aio.Channel):
        self._stub = merchant_auth_pb2_grpc.MerchantAuthServiceStub(channel)

    async def verify(self, api_key: str) -> Merchant | None:
        try:
            reply = await self._stub.AuthenticateApiKey(
                merchant_auth_pb2.AuthenticateApiKeyRequest(api_key=api_key), timeout=2
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                return None
            raise Unavailable(
                "cannot check the API key right now", reason="auth_unavailable"
            ) from error
        return Merchant(reply.merchant_id, reply.livemode)


def remote_callers(
    gateway_addr: str, issuer: TokenIssuer, verifier: TokenVerifier
) -> tuple[Callers, grpc.aio.Channel]:
    """Callers for a service that is not the gateway, and the channel to close at shutdown."""
    channel = service_channel(gateway_addr, issuer, audience="gateway")
    api_keys: ApiKeyVerifier = CachedApiKeyVerifier(GatewayApiKeyVerifier(channel))
    return Callers(api_keys, verifier), channel
