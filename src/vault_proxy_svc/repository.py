"""Reads and writes vault_proxy_svc's rows; no protobuf here."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.db import autocommit
from vault_proxy_svc.tables import payment_methods


class PaymentMethodRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, token: str) -> Row | None:
        async with self._reads.connect() as connection:
            result = await connection.execute(
                select(payment_methods).where(payment_methods.c.id == token)
            )
            return result.first()
