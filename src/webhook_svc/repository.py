"""Reads and writes webhook_svc's rows; no protobuf here."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.db import autocommit
from webhook_svc.tables import webhook_endpoints


class WebhookEndpointRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, endpoint_id: str) -> Row | None:
        async with self._reads.connect() as connection:
            result = await connection.execute(
                select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
            )
            return result.first()
