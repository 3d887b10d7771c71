"""Reads and writes gateway_svc's rows; no protobuf here."""

from __future__ import annotations

from sqlalchemy import select, tuple_
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_svc.tables import payment_intents
from paymesh.platform.callers import Merchant, owned_by
from paymesh.platform.db import autocommit
from paymesh.platform.errors import InvalidArgument


class PaymentIntentRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, intent_id: str, merchant: Merchant) -> Row | None:
        """The merchant's intent in the merchant's mode; another's is as good as missing."""
        async with self._reads.connect() as connection:
            return (
                await connection.execute(owned_by(payment_intents, intent_id, merchant))
            ).first()

    async def page(
        self, merchant: Merchant, limit: int, starting_after: str
    ) -> tuple[list[Row], bool]:
        """Newest first; the page after `starting_after` (an id of the merchant's) if given."""
        scope = (
            payment_intents.c.merchant_id == merchant.id,
            payment_intents.c.livemode == merchant.livemode,
        )
        query = select(payment_intents).where(*scope)
        async with self._reads.connect() as connection:
            if starting_after:
                cursor = (
                    await connection.execute(
                        select(payment_intents.c.created_at, payment_intents.c.id).where(
                            *scope, payment_intents.c.id == starting_after
                        )
                    )
                ).first()
                if cursor is None:
                    raise InvalidArgument.for_field(
                        "starting_after", "resource_missing", "no such payment_intent"
                    )
                query = query.where(
                    tuple_(payment_intents.c.created_at, payment_intents.c.id)
                    < tuple_(cursor.created_at, cursor.id)
                )
            rows = (
                await connection.execute(
                    query.order_by(
                        payment_intents.c.created_at.desc(), payment_intents.c.id.desc()
                    ).limit(limit + 1)
                )
            ).all()
        return rows[:limit], len(rows) > limit
