"""Verifies a hash-chained audit table (gateway.payment_audit, rebill.rebill_audit): each
row's hash must be the digest of its content chained to the previous row of its chain, in the
chain's sequence (the database computes all three on insert, under the chain's lock), so an
edit, a deletion or an insertion behind the database's back shows up at the first broken row.
Each merchant has several chains (migration_ops.split_chained_audit); a transaction's rows
are all in one of them.

The chain alone cannot show a deleted newest row, nor a chain rewritten with the database's
own digest function: the signed checkpoints of `{table}_checkpoints`
(paymesh.platform.audit_checkpoints) can. Every row up to a chain's newest checkpoint must be
there, with the hash the checkpoint's MAC vouches for."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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
    TextClause,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.audit_keys import AuditKeyMissing, AuditKeys, Head

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
        # Large details, compressed (paymesh.platform.audit_details); `details` is then a stub.
        Column("details_z", LargeBinary, nullable=True),
        # Filled by the database's chain trigger: the chain (of the merchant's, by transaction), its
        # sequence and the chained hashes.
        Column("chain", SmallInteger, nullable=False, server_default=text("0")),
        Column("seq", BigInteger, nullable=False, server_default=text("0")),
        Column("prev_hash", LargeBinary, nullable=False, server_default=text("''::bytea")),
        Column("hash", LargeBinary, nullable=False, server_default=text("''::bytea")),
    )


def _scope(alias: str, one_merchant: bool, some_chains: bool) -> str:
    conditions = []
    if one_merchant:
        conditions.append(f"{alias}merchant_id = :merchant")
    if some_chains:
        conditions.append(f"{alias}chain = ANY(:chains)")
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _check(table: str, one_merchant: bool = False, some_chains: bool = False) -> TextClause:
    if not _TABLE.fullmatch(table):
        raise ValueError(f"not a schema.table name: {table!r}")
    where = _scope("", one_merchant, some_chains)
    return text(
        f"""
        SELECT id, merchant_id, chain,
               hash = {table}_digest(prev_hash, a) AS content_intact,
               prev_hash = coalesce(lag(hash) OVER in_chain, '\\x')
                 AND seq = coalesce(lag(seq) OVER in_chain, 0) + 1 AS linked
        FROM {table} a
        {where}
        WINDOW in_chain AS (PARTITION BY merchant_id, chain ORDER BY seq)
        ORDER BY merchant_id, chain, seq
        """
    )


def _checkpoints(table: str, one_merchant: bool = False, some_chains: bool = False) -> TextClause:
    """Every checkpoint of `table` (of one merchant's chains, or some of them), beside the
    row it names as it is now (if any)."""
    where = _scope("c.", one_merchant, some_chains)
    return text(
        f"""
        SELECT c.id, c.merchant_id, c.chain, c.seq, c.row_id, c.hash, c.row_count, c.key_id,
               c.mac, a.id AS found_id, a.hash AS found_hash
        FROM {table}_checkpoints c
        LEFT JOIN {table} a ON a.merchant_id = c.merchant_id AND a.chain = c.chain
          AND a.seq = c.seq
        {where}
        ORDER BY c.merchant_id, c.chain, c.seq, c.id
        """
    )


_ROW_AT = "SELECT id FROM {table} WHERE merchant_id = :merchant AND chain = :chain AND seq = :seq"


@dataclass(frozen=True)
class Break:
    table: str
    row_id: int
    merchant_id: str
    chain: int
    problem: str


@dataclass(frozen=True)
class ChainReport:
    """What a check of chains found: the rows it checked, and the first broken one (None:
    every row verifies)."""

    rows: int
    broken: Break | None


async def first_break(
    engine: AsyncEngine,
    table: str,
    keys: AuditKeys | None = None,
    merchant_id: str | None = None,
) -> Break | None:
    """The first broken row of `table`'s chains (only `merchant_id`'s chains when given;
    None: intact, or no such table here). Raises AuditKeyMissing when the table has
    checkpoints and `keys` lacks a key that signed one."""
    return (await check_chains(engine, table, keys, Scope(merchant_id))).broken


@dataclass(frozen=True)
class Scope:
    """The chains a check covers: every one, one merchant's, or some of one merchant's."""

    merchant_id: str | None = None
    chains: Sequence[int] | None = None

    @property
    def params(self) -> dict[str, object]:
        params: dict[str, object] = {}
        if self.merchant_id is not None:
            params["merchant"] = self.merchant_id
        if self.chains is not None:
            params["chains"] = list(self.chains)
        return params

    def of(self, query: Callable[[str, bool, bool], TextClause], table: str) -> TextClause:
        return query(table, self.merchant_id is not None, self.chains is not None)


async def check_chains(
    engine: AsyncEngine, table: str, keys: AuditKeys | None = None, scope: Scope = Scope()
) -> ChainReport:
    """first_break's check, of the chains in `scope` (each whole, from its first row), with
    the rows checked."""
    params = scope.params
    rows = 0
    async with engine.connect() as connection:
        if await connection.scalar(text("SELECT to_regclass(:t)"), {"t": table}) is None:
            return ChainReport(0, None)
        for row in await connection.execute(scope.of(_check, table), params):
            rows += 1
            if not row.content_intact:
                return ChainReport(
                    rows,
                    Break(
                        table, row.id, row.merchant_id, row.chain, "content does not match its hash"
                    ),
                )
            if not row.linked:
                return ChainReport(
                    rows,
                    Break(
                        table, row.id, row.merchant_id, row.chain, "not chained to the previous row"
                    ),
                )
        if await connection.scalar(text("SELECT to_regclass(:t)"), {"t": f"{table}_checkpoints"}):
            return ChainReport(rows, await _first_unanchored(connection, table, keys, scope))
    return ChainReport(rows, None)


async def _first_unanchored(
    connection: AsyncConnection, table: str, keys: AuditKeys | None, scope: Scope = Scope()
) -> Break | None:
    """The first row that a checkpoint contradicts. Run after the chain check: every chain is
    then whole from seq 1 to its last row, so a chain that once held `seq` rows holds them
    still unless rows were cut off its end, and a row that hashes differently from its
    checkpoint was rewritten, somewhere after the chain's last checkpoint that still holds."""
    vouched: tuple[str, int, int] | None = None  # (merchant, chain, seq) last found as signed
    for c in await connection.execute(scope.of(_checkpoints, table), scope.params):
        head = Head(table, c.merchant_id, c.chain, c.seq, c.row_id, bytes(c.hash), c.row_count)
        if keys is None:
            raise AuditKeyMissing(f"{table} has signed checkpoints: an audit key is needed")

        def broken(row_id: int, problem: str, head: Head = head) -> Break:
            return Break(table, row_id, head.merchant_id, head.chain, problem)

        if not keys.verifies(head, c.key_id, bytes(c.mac)):
            return broken(c.row_id, f"its checkpoint {c.id} does not verify with key {c.key_id}")
        if c.found_id is None:
            return broken(c.row_id, f"missing: checkpoint {c.id} vouches for it (seq {c.seq})")
        if c.found_id != c.row_id or bytes(c.found_hash) != head.hash:
            same_chain = vouched is not None and vouched[:2] == (c.merchant_id, c.chain)
            first = vouched[2] + 1 if vouched is not None and same_chain else 1
            first_id = await connection.scalar(
                text(_ROW_AT.format(table=table)),
                {"merchant": c.merchant_id, "chain": c.chain, "seq": first},
            )
            return broken(
                first_id,
                f"rewritten: rows from seq {first} to {c.seq} do not hash to checkpoint {c.id}",
            )
        if c.row_count != c.seq:
            return broken(c.row_id, f"checkpoint {c.id} counted {c.row_count} rows up to here")
        vouched = (c.merchant_id, c.chain, c.seq)
    return None
