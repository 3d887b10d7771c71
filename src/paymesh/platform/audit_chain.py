"""Verifies a hash-chained audit table (gateway.payment_audit, rebill.rebill_audit): each
row's hash must be the digest of its content chained to the merchant's previous row, in the
merchant's sequence (the database computes all three on insert, under the merchant's chain
lock), so an edit, a deletion or an insertion behind the database's back shows up at the
first broken row."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

_TABLE = re.compile(r"[a-z_]+\.[a-z_]+")


def chained_audit_table(metadata: MetaData, name: str) -> Table:
    """The table migration_ops.create_chained_audit creates (and gateway_0003/0004 made for
    payment_audit)."""
    return Table(
        name,
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("merchant_id", String(40), nullable=False),
        Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("actor", String(20), nullable=False),  # api | scheduler | worker | webhook | ops
        Column("action", String(40), nullable=False),
        Column("object_id", String(40), nullable=False),
        Column("result", String(40), nullable=False),
        Column("details", JSONB, nullable=False),
        # Filled by the database's chain trigger: the merchant's sequence and the chained hashes.
        Column("seq", BigInteger, nullable=False, server_default=text("0")),
        Column("prev_hash", LargeBinary, nullable=False, server_default=text("''::bytea")),
        Column("hash", LargeBinary, nullable=False, server_default=text("''::bytea")),
    )


def _check(table: str):
    if not _TABLE.fullmatch(table):
        raise ValueError(f"not a schema.table name: {table!r}")
    return text(
        f"""
        SELECT id, merchant_id,
               hash = {table}_digest(prev_hash, a) AS content_intact,
               prev_hash = coalesce(lag(hash) OVER merchant_chain, '\\x')
                 AND seq = coalesce(lag(seq) OVER merchant_chain, 0) + 1 AS linked
        FROM {table} a
        WINDOW merchant_chain AS (PARTITION BY merchant_id ORDER BY seq)
        ORDER BY merchant_id, seq
        """
    )


@dataclass(frozen=True)
class Break:
    table: str
    row_id: int
    merchant_id: str
    problem: str


async def first_break(engine: AsyncEngine, table: str) -> Break | None:
    """The first broken row of `table`'s chains (None: intact, or no such table here)."""
    async with engine.connect() as connection:
        if await connection.scalar(text("SELECT to_regclass(:t)"), {"t": table}) is None:
            return None
        for row in await connection.execute(_check(table)):
            if not row.content_intact:
                return Break(table, row.id, row.merchant_id, "content does not match its hash")
            if not row.linked:
                return Break(table, row.id, row.merchant_id, "not chained to the previous row")
    return None
