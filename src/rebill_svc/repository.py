"""Reads and writes rebill_svc's rows; no protobuf here."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.db import autocommit
from rebill_svc.tables import subscriptions


class SubscriptionRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, subscription_id: str) -> Row | None:
        async with self._reads.connect() as connection:
            result = await connection.execute(
                select(subscriptions).where(subscriptions.c.id == subscription_id)
            )
            return result.first()
