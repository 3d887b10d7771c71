"""gRPC transport of the operators' MerchantAdminService: callers must present a service token
of the `ops` identity (`paymesh ops-token`) or the back office's (`backoffice`)."""

from __future__ import annotations

import grpc

from gateway_svc.merchants import MerchantRepository
from paymesh.gateway.v1 import merchant_admin_pb2 as admin_pb2
from paymesh.gateway.v1 import merchant_admin_pb2_grpc as admin_pb2_grpc
from paymesh.platform.callers import CachedApiKeyVerifier, Callers
from paymesh.platform.errors import InvalidArgument
from paymesh.platform.operators import ADMIN_IDENTITIES
from paymesh.platform.wire import timestamp

PSPS = ("sandbox", "stripe")


def key_message(row) -> admin_pb2.ApiKeyInfo:
    return admin_pb2.ApiKeyInfo(
        id=row.id,
        livemode=row.livemode,
        last4=row.last4,
        created=timestamp(row.created_at),
        revoked=timestamp(row.revoked_at),
    )


def merchant_message(row, keys) -> admin_pb2.Merchant:
    return admin_pb2.Merchant(
        id=row.id,
        name=row.name,
        psp_routing=row.psp_routing,
        api_keys=[key_message(key) for key in keys],
        created=timestamp(row.created_at),
    )


class MerchantAdminServicer(admin_pb2_grpc.MerchantAdminServiceServicer):
    def __init__(
        self, merchants: MerchantRepository, callers: Callers, key_cache: CachedApiKeyVerifier
    ):
        self._merchants = merchants
        self._callers = callers
        self._key_cache = key_cache  # this process stops accepting a revoked key at once

    def _operator(self, context: grpc.aio.ServicerContext) -> None:
        self._callers.service(context, allowed=ADMIN_IDENTITIES)

    async def CreateMerchant(self, request, context):
        self._operator(context)
        if not request.name.strip():
            raise InvalidArgument.for_field("name", "missing", "a merchant needs a name")
        created = await self._merchants.create(request.name.strip())
        merchant, keys = await self._merchants.get(created.id)
        return admin_pb2.CreateMerchantResponse(
            merchant=merchant_message(merchant, keys),
            secret_key=created.secret_key,
            live_secret_key=created.live_secret_key,
        )

    async def ListMerchants(self, request, context):
        self._operator(context)
        limit = request.limit or 20
        if not 1 <= limit <= 100:
            raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
        rows, has_more = await self._merchants.page(limit, request.starting_after)
        merchants = [merchant_message(*(await self._merchants.get(row.id))) for row in rows]
        return admin_pb2.ListMerchantsResponse(merchants=merchants, has_more=has_more)

    async def RollApiKey(self, request, context):
        self._operator(context)
        secret, row = await self._merchants.roll_key(request.merchant_id, request.livemode)
        self._key_cache.forget()
        return admin_pb2.RollApiKeyResponse(secret_key=secret, api_key=key_message(row))

    async def RevokeApiKey(self, request, context):
        self._operator(context)
        row = await self._merchants.revoke_key(request.merchant_id, request.api_key_id)
        self._key_cache.forget()
        return admin_pb2.RevokeApiKeyResponse(api_key=key_message(row))

    async def SetPspRouting(self, request, context):
        self._operator(context)
        psps = list(request.psp_routing)
        if not psps or any(p not in PSPS for p in psps) or len(set(psps)) != len(psps):
            raise InvalidArgument.for_field(
                "psp_routing", "invalid_psp_routing", f"a non-empty ordered list of {PSPS}"
            )
        await self._merchants.set_routing(request.merchant_id, psps)
        merchant, keys = await self._merchants.get(request.merchant_id)
        return admin_pb2.SetPspRoutingResponse(merchant=merchant_message(merchant, keys))
