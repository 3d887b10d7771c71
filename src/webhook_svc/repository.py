"""Reads and writes webhook_svc's rows; no protobuf here."""

from __future__ import annotations

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Merchant, owned_by
from paymesh.platform.db import autocommit
from webhook_svc.tables import webhook_endpoints


class WebhookEndpointRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, endpoint_id: str, merchant: Merchant) -> Row | None:
        """The merchant's object in the merchant's mode; another's is as good as missing."""
        async with self._reads.connect() as connection:
            return (
                await connection.execute(owned_by(webhook_endpoints, endpoint_id, merchant))
            ).first()
