"""Signed checkpoints of a chained audit table's heads, written by the service that owns the
table, in one process at a time (a session advisory lock), every few seconds.

A round signs, with the audit key (paymesh.platform.audit_keys, never in the database), each
chain whose head moved since its last checkpoint: the head's seq, id and hash, and how many
rows the chain held. The head's SHA-256 hash covers every row before it, so the signature
anchors the whole chain up to there: a row cut off its end, or a chain rewritten and
re-hashed with the database's digest function, no longer matches a checkpoint, and a
checkpoint cannot be made to match without the key. Rows newer than the last round are not
anchored yet: the interval is that window, and audit_chain_head_checkpoint_age_seconds shows
how old the last round is.

The audit rows' own hashes stay unkeyed (the database computes them in the insert trigger,
under the chain's lock, where the key must not go): a keyed hash per row would have to be
computed by each writer, chained to the previous row, i.e. read under the chain's lock, one
more round trip on every payment's state change. Rows written before the first round (before
checkpoints existed) are anchored, as found, by that round."""

from __future__ import annotations

import asyncio
import re
import time

import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.advisory_lock import SessionLock
from paymesh.platform.audit_keys import AuditKeys, Head
from paymesh.platform.metrics import AUDIT_CHECKPOINT_AGE

log = structlog.get_logger(__name__)

_TABLE = re.compile(r"[a-z_]+\.[a-z_]+")
# A round looks at rows with ids above the last round's highest, less this many: a transaction
# may commit its row after rows with higher ids were seen. A row that commits later still than
# that is anchored with its chain's next row.
LOOKBACK_IDS = 10_000

_NEWEST_ID = "SELECT max(id) FROM {table}"
_LAST_ANCHORED_ID = "SELECT row_id FROM {table}_checkpoints ORDER BY id DESC LIMIT 1"
# Each chain's newest row in the window, with its chain's last checkpoint if that is older; the
# count adds the rows between the two to the checkpoint's.
_MOVED_HEADS = """
WITH heads AS (
  SELECT DISTINCT ON (merchant_id, chain) merchant_id, chain, seq, id, hash FROM {table}
  WHERE id > :since AND id <= :upto ORDER BY merchant_id, chain, seq DESC
)
SELECT h.merchant_id, h.chain, h.seq, h.id, h.hash,
       coalesce(p.row_count, 0) + (
         SELECT count(*) FROM {table} x
         WHERE x.merchant_id = h.merchant_id AND x.chain = h.chain
           AND x.seq > coalesce(p.seq, 0) AND x.seq <= h.seq) AS row_count
FROM heads h LEFT JOIN LATERAL (
  SELECT seq, row_count FROM {table}_checkpoints c
  WHERE c.merchant_id = h.merchant_id AND c.chain = h.chain ORDER BY seq DESC LIMIT 1
) p ON true
WHERE p.seq IS NULL OR p.seq < h.seq
"""
_INSERT = """
INSERT INTO {table}_checkpoints (merchant_id, chain, seq, row_id, hash, row_count, key_id, mac)
VALUES (:merchant_id, :chain, :seq, :row_id, :hash, :row_count, :key_id, :mac)
"""


class AuditCheckpointer:
    def __init__(
        self,
        engine: AsyncEngine,
        table: str,
        keys: AuditKeys,
        interval: float,
        session_engine: AsyncEngine | None = None,
    ):
        """`session_engine`: where the round's lock is held (DATABASE_DIRECT_URL); `engine`
        by default."""
        if not _TABLE.fullmatch(table):
            raise ValueError(f"not a schema.table name: {table!r}")
        self.table = table
        self._engine = engine
        self._session_engine = session_engine or engine
        self._keys = keys
        self._interval = interval
        self._since: int | None = None  # read from the checkpoints when a round first needs it
        self._last_round: float | None = None

    def _sql(self, statement: str) -> TextClause:
        return text(statement.format(table=self.table))

    async def checkpoint(self) -> int:
        """One round: signs every chain head that moved; returns how many it signed."""
        async with self._engine.begin() as connection:
            if self._since is None:
                anchored = await connection.scalar(self._sql(_LAST_ANCHORED_ID))
                self._since = max((anchored or 0) - LOOKBACK_IDS, 0)
            upto = await connection.scalar(self._sql(_NEWEST_ID)) or 0
            moved = (
                await connection.execute(
                    self._sql(_MOVED_HEADS), {"since": self._since, "upto": upto}
                )
            ).all()
            signed = []
            for row in moved:
                head = Head(
                    self.table,
                    row.merchant_id,
                    row.chain,
                    row.seq,
                    row.id,
                    bytes(row.hash),
                    row.row_count,
                )
                key_id, mac = self._keys.sign(head)
                signed.append(
                    {
                        "merchant_id": head.merchant_id,
                        "chain": head.chain,
                        "seq": head.seq,
                        "row_id": head.row_id,
                        "hash": head.hash,
                        "row_count": head.row_count,
                        "key_id": key_id,
                        "mac": mac,
                    }
                )
            if signed:
                await connection.execute(self._sql(_INSERT), signed)
        self._since = max(self._since, upto - LOOKBACK_IDS)
        return len(signed)

    def _age(self) -> float:
        return time.monotonic() - self._last_round if self._last_round is not None else 0.0

    async def run(self) -> None:
        """Checkpoints every `interval` seconds while this process holds the table's lock.
        Only the holder reports audit_chain_head_checkpoint_age_seconds: the time since its
        last complete round began (every row committed before then is anchored)."""
        lock = SessionLock(
            self._session_engine,
            f"audit-checkpoints:{self.table}",
            stale_after=3 * self._interval + 10,
        )
        try:
            while True:
                try:
                    if await lock.held():
                        started = time.monotonic()
                        signed = await self.checkpoint()
                        if self._last_round is None:
                            AUDIT_CHECKPOINT_AGE.labels(self.table).set_function(self._age)
                        self._last_round = started
                        if signed:
                            log.info("audit_checkpointed", table=self.table, chains=signed)
                    else:
                        self._stand_by()
                except Exception:  # retried next round; the age shows it
                    log.exception("audit_checkpoint_failed", table=self.table)
                await asyncio.sleep(self._interval)
        finally:
            self._stand_by()
            await lock.release()

    def _stand_by(self) -> None:
        """A standby reports no age: only the holder's is the table's."""
        if self._last_round is not None:
            AUDIT_CHECKPOINT_AGE.remove(self.table)
        self._last_round = None
        self._since = None
