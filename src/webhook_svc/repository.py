"""Reads and writes webhook_svc's rows; no protobuf here."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Merchant
from paymesh.platform.db import autocommit
from webhook_svc.tables import webhook_endpoints


class WebhookEndpointRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, endpoint_id: str, merchant: Merchant) -> Row | None:
        """The merchant's object in the merchant's mode; another's is as good as missing."""
        async with self._reads.connect() as connection:
            result = await connection.execute(
                select(webhook_endpoints).where(
                    webhook_endpoints.c.id == endpoint_id,
                    webhook_endpoints.c.merchant_id == merchant.id,
                    webhook_endpoints.c.livemode == merchant.livemode,
                )
            )
            return result.first()
