"""Reads and writes rebill_svc's rows; no protobuf here."""

from __future__ import annotations

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Merchant, owned_by
from paymesh.platform.db import autocommit
from rebill_svc.tables import subscriptions


class SubscriptionRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, subscription_id: str, merchant: Merchant) -> Row | None:
        """The merchant's object in the merchant's mode; another's is as good as missing."""
        async with self._reads.connect() as connection:
            return (
                await connection.execute(owned_by(subscriptions, subscription_id, merchant))
            ).first()
