"""Reads and writes vault_proxy_svc's rows; no protobuf here. Functions taking a connection
run inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.callers import Merchant
from paymesh.platform.db import autocommit
from vault_proxy_svc.tables import payment_methods, psp_tokens, vault_audit


class PaymentMethodRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, token: str, merchant: Merchant) -> Row | None:
        """The merchant's payment method in the merchant's mode; another's is as good as missing."""
        async with self._reads.connect() as connection:
            return await find(connection, token, merchant)

    async def psp_reference(self, token: str, psp: str) -> str | None:
        async with self._reads.connect() as connection:
            return await connection.scalar(
                select(psp_tokens.c.psp_reference).where(
                    psp_tokens.c.payment_method == token, psp_tokens.c.psp == psp
                )
            )


async def find(
    connection: AsyncConnection, token: str, merchant: Merchant, for_update: bool = False
) -> Row | None:
    query = select(payment_methods).where(
        payment_methods.c.id == token,
        payment_methods.c.merchant_id == merchant.id,
        payment_methods.c.livemode == merchant.livemode,
    )
    if for_update:
        query = query.with_for_update()
    return (await connection.execute(query)).first()


async def insert_payment_method(connection: AsyncConnection, values: dict[str, Any]) -> Row:
    result = await connection.execute(
        insert(payment_methods).values(**values).returning(payment_methods)
    )
    return result.one()


async def shred(connection: AsyncConnection, token: str) -> Row:
    """Destroys the card data: without its wrapped data key the ciphertext is noise."""
    await connection.execute(delete(psp_tokens).where(psp_tokens.c.payment_method == token))
    result = await connection.execute(
        update(payment_methods)
        .where(payment_methods.c.id == token)
        .values(
            wrapped_key=None, nonce=None, ciphertext=None, kek_version=None, detached_at=func.now()
        )
        .returning(payment_methods)
    )
    return result.one()


async def save_psp_reference(
    connection: AsyncConnection, token: str, psp: str, reference: str
) -> str:
    """Stores the mapping; if a concurrent call stored one first, that one wins."""
    await connection.execute(
        pg_insert(psp_tokens)
        .values(payment_method=token, psp=psp, psp_reference=reference)
        .on_conflict_do_nothing()
    )
    return await connection.scalar(
        select(psp_tokens.c.psp_reference).where(
            psp_tokens.c.payment_method == token, psp_tokens.c.psp == psp
        )
    )


async def add_audit(
    connection: AsyncConnection,
    *,
    actor: str,
    action: str,
    result: str,
    payment_method: str | None = None,
    merchant_id: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await connection.execute(
        insert(vault_audit).values(
            actor=actor,
            action=action,
            result=result,
            payment_method=payment_method,
            merchant_id=merchant_id,
            reason=reason,
            details=details or {},
        )
    )
