"""Reads and writes gateway_svc's rows; no protobuf here."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_svc.tables import payment_intents
from paymesh.platform.callers import Merchant
from paymesh.platform.db import autocommit


class PaymentIntentRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, intent_id: str, merchant: Merchant) -> Row | None:
        """The merchant's intent in the merchant's mode; another's is as good as missing."""
        async with self._reads.connect() as connection:
            result = await connection.execute(
                select(payment_intents).where(
                    payment_intents.c.id == intent_id,
                    payment_intents.c.merchant_id == merchant.id,
                    payment_intents.c.livemode == merchant.livemode,
                )
            )
            return result.first()
