"""Channels from one service to another: trace context and the caller's service token ride
along on every call; with PAYMESH_TLS_DIR set, over mTLS with the caller's own certificate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from paymesh.platform.callers import LIVEMODE_HEADER, MERCHANT_HEADER, Merchant
from paymesh.platform.config import TlsSettings
from paymesh.platform.service_auth import SERVICE_TOKEN_HEADER, TokenIssuer
from paymesh.platform.tls import MutualTls
from paymesh.platform.tracing import client_interceptors


class _ServiceToken(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, issuer: TokenIssuer, audience: str):
        self._issuer = issuer
        self._audience = audience

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = list(client_call_details.metadata or ())
        metadata.append((SERVICE_TOKEN_HEADER, self._issuer.token_for(self._audience)))
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout,
            metadata=grpc.aio.Metadata(*metadata),
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def service_channel(target: str, issuer: TokenIssuer, audience: str) -> grpc.aio.Channel:
    interceptors = [*client_interceptors(), _ServiceToken(issuer, audience)]
    tls_dir = TlsSettings().tls_dir
    if tls_dir is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    credentials = MutualTls.load(tls_dir, issuer.service).channel_credentials()
    return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)


def on_behalf_of(merchant: Merchant) -> tuple[tuple[str, str], ...]:
    """Metadata for a service call made for `merchant`."""
    return ((MERCHANT_HEADER, merchant.id), (LIVEMODE_HEADER, str(merchant.livemode).lower()))


async def close_on_shutdown(channel: grpc.aio.Channel) -> None:
    """A background job that only closes `channel` when the service stops."""
    try:
        await asyncio.Event().wait()
    finally:
        await channel.close()
