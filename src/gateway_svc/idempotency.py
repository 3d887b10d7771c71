"""Idempotency keys on every POST, scoped per merchant and mode, kept at least 24 h.

Same key + same request: the stored answer (success or error), marked as replayed. Same key
+ different request: 409 `idempotency_key_reused`. Two at once: the first runs, the second
waits for its answer (up to `wait_seconds`), then gets 409 `idempotency_key_in_use`. The
answer is stored in the same transaction as the state change it reports. A key whose request
died mid-way (no answer after `stale_seconds`) may be run again: the PSP idempotency keys and
the intent's own state make that safe."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

from google.protobuf.message import Message
from google.rpc import status_pb2
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway_svc.tables import idempotency_keys
from paymesh.platform.callers import Merchant
from paymesh.platform.db import autocommit
from paymesh.platform.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PaymeshError,
    ReplayedError,
    to_status_proto,
)

MAX_KEY_LENGTH = 255
# Errors that are the request's own: replayed as they were. Others (unavailable, internal)
# release the key so the same request may be tried again.
_FINAL_ERRORS = (InvalidArgument, NotFound, FailedPrecondition)


@dataclass(frozen=True)
class Claim:
    """The right to run one request under `key` (None: the caller sent no key)."""

    merchant: Merchant
    key: str | None
    replay: bytes | None = None
    replay_is_error: bool = False


class Idempotency:
    def __init__(self, engine: AsyncEngine, wait_seconds: float = 5.0, stale_seconds: float = 60):
        self._engine = autocommit(engine)
        self._wait = wait_seconds
        self._stale = stale_seconds

    async def claim(
        self, merchant: Merchant, key: str | None, method: str, request: Message
    ) -> Claim:
        if not key:
            return Claim(merchant, None)
        if len(key) > MAX_KEY_LENGTH:
            raise InvalidArgument.for_field(
                "idempotency-key", "invalid_idempotency_key", f"at most {MAX_KEY_LENGTH} chars"
            )
        digest = hashlib.sha256(
            method.encode() + b"\0" + request.SerializeToString(deterministic=True)
        ).hexdigest()
        pk = _pk(merchant, key)
        deadline = time.monotonic() + self._wait
        while True:
            async with self._engine.connect() as connection:
                inserted = await connection.scalar(
                    insert(idempotency_keys)
                    .values(**pk, request_hash=digest, state="running")
                    .on_conflict_do_nothing()
                    .returning(idempotency_keys.c.key)
                )
                if inserted:
                    return Claim(merchant, key)
                row = (
                    await connection.execute(select(idempotency_keys).where(*_where(pk)))
                ).first()
                if row is None:
                    continue  # released in between: try again
                if row.request_hash != digest:
                    raise Conflict(
                        "this idempotency key was used with a different request",
                        reason="idempotency_key_reused",
                    )
                if row.state == "done":
                    return Claim(merchant, key, row.response, row.is_error)
                if time.time() - row.locked_at.timestamp() > self._stale:
                    taken = await connection.execute(
                        update(idempotency_keys)
                        .where(*_where(pk), idempotency_keys.c.locked_at == row.locked_at)
                        .values(locked_at=func.now())
                    )
                    if taken.rowcount:
                        return Claim(merchant, key)
            if time.monotonic() > deadline:
                raise Conflict(
                    "a request with this idempotency key is in progress; retry later",
                    reason="idempotency_key_in_use",
                )
            await asyncio.sleep(0.05)

    async def complete(self, connection: AsyncConnection, claim: Claim, response: bytes) -> None:
        """Stores the answer, in the caller's transaction (the one that made the change)."""
        if claim.key is None:
            return
        await connection.execute(
            update(idempotency_keys)
            .where(*_where(_pk(claim.merchant, claim.key)))
            .values(state="done", response=response, is_error=False)
        )

    async def settle_error(self, claim: Claim, error: Exception) -> None:
        if claim.key is None:
            return
        pk = _pk(claim.merchant, claim.key)
        async with self._engine.connect() as connection:
            if isinstance(error, PaymeshError) and isinstance(error, _FINAL_ERRORS):
                status = to_status_proto(error).SerializeToString()
                await connection.execute(
                    update(idempotency_keys)
                    .where(*_where(pk), idempotency_keys.c.state == "running")
                    .values(state="done", response=status, is_error=True)
                )
            else:
                await connection.execute(
                    delete(idempotency_keys).where(
                        *_where(pk), idempotency_keys.c.state == "running"
                    )
                )

    @staticmethod
    def replayed_error(claim: Claim) -> ReplayedError:
        return ReplayedError(status_pb2.Status.FromString(claim.replay or b""))


def _pk(merchant: Merchant, key: str) -> dict:
    return {"merchant_id": merchant.id, "livemode": merchant.livemode, "key": key}


def _where(pk: dict):
    return [getattr(idempotency_keys.c, name) == value for name, value in pk.items()]
