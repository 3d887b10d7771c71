"""Verifies the payment_audit hash chain: each row's hash must be the digest of its content
chained to the merchant's previous row, in the merchant's sequence (the database computes all
three on insert, under the merchant's chain lock), so an edit, a deletion or an insertion
behind the database's back shows up at the first broken row."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_CHECK = text(
    """
    SELECT id, merchant_id,
           hash = gateway.payment_audit_digest(prev_hash, a) AS content_intact,
           prev_hash = coalesce(lag(hash) OVER merchant_chain, '\\x')
             AND seq = coalesce(lag(seq) OVER merchant_chain, 0) + 1 AS linked
    FROM gateway.payment_audit a
    WINDOW merchant_chain AS (PARTITION BY merchant_id ORDER BY seq)
    ORDER BY merchant_id, seq
    """
)


@dataclass(frozen=True)
class Break:
    row_id: int
    merchant_id: str
    problem: str


async def first_break(engine: AsyncEngine) -> Break | None:
    async with engine.connect() as connection:
        for row in await connection.execute(_CHECK):
            if not row.content_intact:
                return Break(row.id, row.merchant_id, "content does not match its hash")
            if not row.linked:
                return Break(row.id, row.merchant_id, "not chained to the previous row")
    return None
