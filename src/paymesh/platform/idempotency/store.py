"""Claim → bind → settle, against a service's own key table (table.py), fenced by the time a
claim took its key (keys.py tells what a row means)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from google.rpc import status_pb2
from sqlalchemy import ColumnElement, Table, TextClause, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.callers import Merchant
from paymesh.platform.coalesce import Coalescer
from paymesh.platform.db import autocommit
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.errors import ReplayedError, to_status_proto
from paymesh.platform.idempotency.keys import (
    AwaitOutcome,
    Replay,
    StoredKey,
    TakeOver,
    in_use,
    key_digest,
    request_digest,
    settlement,
    verdict,
)


@dataclass(frozen=True)
class Claim:
    """The right to run one request under `key` (as stored: a digest; None when the caller
    sent no key), held since `fence`, or what to answer instead (`replay`, or the object whose
    outcome is awaited)."""

    merchant: Merchant
    key: str | None = None
    fence: datetime | None = None
    replay: Replay | None = None
    resume_from: str | None = None  # the object a released or dead request had bound
    awaiting_outcome: str | None = None

    @property
    def answered(self) -> bool:
        """Whether the request is answered from the key alone, without running."""
        return self.replay is not None or self.awaiting_outcome is not None

    @property
    def replay_object(self) -> str | None:
        return self.replay.object_id if self.replay else None

    @property
    def bind_params(self) -> dict[str, Any]:
        """The held key, as statements that bind it in their own transaction name it."""
        return {
            "key_merchant_id": self.merchant.id,
            "key_livemode": self.merchant.livemode,
            "key_key": self.key,
            "key_locked_at": self.fence,
        }


@dataclass(frozen=True)
class NewKey:
    """A key this request means to be the first to use, with the request's fingerprint: the
    statement that makes the object stores it `done` and bound, unless it exists already."""

    merchant: Merchant
    key: str
    request_hash: str

    @property
    def bind_params(self) -> dict[str, Any]:
        return {
            "key_merchant_id": self.merchant.id,
            "key_livemode": self.merchant.livemode,
            "key_key": self.key,
            "key_request_hash": self.request_hash,
        }


async def bind_key(connection: AsyncConnection, table: Table, claim: Claim, object_id: str) -> None:
    """Binds the claim's key to `object_id`, done, in the transaction that made or changed it
    (the recovery point); a request that lost its key (taken over: it looked dead) raises,
    and its transaction changes nothing."""
    if claim.key is None:
        return
    bound = await connection.scalar(
        update(table)
        .where(*_held(table, claim))
        .values(state="done", object_id=object_id)
        .returning(table.c.key)
    )
    if bound is None:
        raise in_use()


def replayed_error(replay: Replay) -> ReplayedError:
    return ReplayedError(status_pb2.Status.FromString(replay.error or b""))


class Idempotency:
    def __init__(
        self,
        engine: AsyncEngine,
        direct: DirectSql,
        table: Table,
        secret: Callable[[], bytes],
        wait_seconds: float = 5.0,
        stale_seconds: float = 60,
    ):
        self._engine = autocommit(engine)
        self._direct = direct  # the first claim of a key, the common case, on the hot path
        self._first_claims = Coalescer(self._claim_first)
        self._claim_statement = _claim_statement(table)
        self.table = table
        self._secret = secret
        self._wait = wait_seconds
        self._stale = stale_seconds

    def first_use(self, merchant: Merchant, key: str, method: str, request: Message) -> NewKey:
        """`key` as a statement stores it when no request has used it yet."""
        secret = self._secret()
        return NewKey(
            merchant, key_digest(secret, merchant, key), request_digest(secret, method, request)
        )

    async def claim(
        self, merchant: Merchant, key: str | None, method: str, request: Message
    ) -> Claim:
        """The key taken for this request, or the answer it gets instead. The key's row is
        the first thing looked at."""
        if not key:
            return Claim(merchant)
        secret = self._secret()
        digest = request_digest(secret, method, request)
        key = key_digest(secret, merchant, key)
        pk = _pk(merchant, key)
        keys = self.table.c
        deadline = time.monotonic() + self._wait
        while True:
            fence = await self._first_claims.submit({**pk, "request_hash": digest})
            if fence is not None:
                return Claim(merchant, key, fence)
            async with self._engine.connect() as connection:
                row = (await connection.execute(select(self.table).where(*self._is(pk)))).first()
                if row is None:
                    continue  # deleted in between: try again
                stored = StoredKey(
                    row.request_hash,
                    row.state,
                    row.locked_at,
                    row.object_id,
                    row.response,
                    row.is_error,
                )
                age = time.time() - row.locked_at.timestamp()
                decided = verdict(stored, digest, age, self._stale)
                if isinstance(decided, Replay):
                    return Claim(merchant, key, replay=decided)
                if isinstance(decided, AwaitOutcome):
                    return Claim(merchant, key, awaiting_outcome=decided.object_id)
                if isinstance(decided, TakeOver):
                    taken = await connection.scalar(
                        update(self.table)
                        .where(
                            *self._is(pk),
                            keys.state == row.state,
                            keys.locked_at == row.locked_at,
                        )
                        .values(state="running", locked_at=func.clock_timestamp())
                        .returning(keys.locked_at)
                    )
                    if taken is not None:
                        return Claim(merchant, key, taken, resume_from=decided.resume_from)
            if time.monotonic() > deadline:
                raise in_use()
            await asyncio.sleep(0.05)

    async def _claim_first(self, claims: list[dict[str, Any]]) -> list[datetime | None]:
        """The fence of each of `claims` that took a key nobody held. Of two claims of one key
        in one batch, the first may win; the other finds the key taken, as it would a moment
        later."""
        first: dict[KeyIdentity, dict[str, Any]] = {}
        for claim in claims:
            first.setdefault(_identity(claim), claim)
        rows = await self._direct.all(
            self._claim_statement, {"claims": json.dumps(list(first.values()))}
        )
        taken = {_identity(row): row["locked_at"] for row in rows}
        return [
            taken.get(_identity(claim)) if first[_identity(claim)] is claim else None
            for claim in claims
        ]

    async def settle(self, claim: Claim, object_id: str | None, answer: bytes | None) -> None:
        """After a request that bound nothing in its own transaction: the key answers with
        `object_id` as it is now, or with `answer`."""
        if claim.key is None:
            return
        async with self._engine.connect() as connection:
            await connection.execute(
                update(self.table)
                .where(*self._held(claim))
                .values(state="done", object_id=object_id, response=answer)
            )

    async def settle_error(self, claim: Claim, error: Exception) -> None:
        """After a failed request: its own errors are replayed as they were; an unknown outcome
        keeps the key waiting for the sweep; anything else lets it run again."""
        if claim.key is None:
            return
        keys = self.table.c
        mine = self._held(claim)
        kind = settlement(error)
        async with self._engine.connect() as connection:
            if kind == "store":
                status = to_status_proto(error).SerializeToString()
                await connection.execute(
                    update(self.table)
                    .where(*mine)
                    .values(state="done", response=status, is_error=True)
                )
            elif kind == "await":
                # Still running, for the sweep to settle; the kept answer says it ended.
                status = to_status_proto(error).SerializeToString()
                await connection.execute(
                    update(self.table)
                    .where(*mine, keys.object_id.is_not(None))
                    .values(response=status)
                )
            else:
                await connection.execute(
                    update(self.table)
                    .where(*mine, keys.object_id.is_not(None))
                    .values(state="released")
                )
                await connection.execute(delete(self.table).where(*mine, keys.object_id.is_(None)))

    def _is(self, pk: dict[str, Any]) -> list[ColumnElement[bool]]:
        return [self.table.c[name] == value for name, value in pk.items()]

    def _held(self, claim: Claim) -> list[ColumnElement[bool]]:
        return _held(self.table, claim)


def _claim_statement(table: Table) -> TextClause:
    """The first claims of keys, for every request that arrives while the last such statement
    is out, in one statement (coalesced): every keyed POST starts with one."""
    return text(
        f"""
        INSERT INTO {table.fullname} (merchant_id, livemode, key, request_hash, state)
        SELECT merchant_id, livemode, key, request_hash, 'running'
        FROM jsonb_to_recordset(CAST(:claims AS jsonb)) AS x(
          merchant_id text, livemode boolean, key text, request_hash text)
        ON CONFLICT DO NOTHING
        RETURNING merchant_id, livemode, key, locked_at
        """
    )


def _held(table: Table, claim: Claim) -> list[ColumnElement[bool]]:
    """The claim's key, while this claim still holds it."""
    keys = table.c
    return [
        keys.merchant_id == claim.merchant.id,
        keys.livemode == claim.merchant.livemode,
        keys.key == claim.key,
        keys.state == "running",
        keys.locked_at == claim.fence,
    ]


def _pk(merchant: Merchant, key: str) -> dict[str, Any]:
    return {"merchant_id": merchant.id, "livemode": merchant.livemode, "key": key}


# merchant id, livemode, key
KeyIdentity = tuple[str, bool, str]


def _identity(row: Mapping[str, Any]) -> KeyIdentity:
    return (row["merchant_id"], row["livemode"], row["key"])
