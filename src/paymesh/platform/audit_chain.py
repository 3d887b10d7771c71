"""Verifies a hash-chained audit table (gateway.payment_audit, rebill.rebill_audit): each
row's hash must be the digest of its content chained to the previous row of its chain, in the
chain's sequence (the database computes all three on insert, under the chain's lock), so an
edit, a deletion or an insertion behind the database's back shows up at the first broken row.
Each merchant has several chains (migration_ops.split_chained_audit); a transaction's rows
are all in one of them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    SmallInteger,
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
        # Filled by the database's chain trigger: the chain (of the merchant's, by transaction), its
        # sequence and the chained hashes.
        Column("chain", SmallInteger, nullable=False, server_default=text("0")),
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
               prev_hash = coalesce(lag(hash) OVER in_chain, '\\x')
                 AND seq = coalesce(lag(seq) OVER in_chain, 0) + 1 AS linked
        FROM {table} a
        WINDOW in_chain AS (PARTITION BY merchant_id, chain ORDER BY seq)
        ORDER BY merchant_id, chain, seq
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
