"""Idempotency keys on every POST, scoped per merchant and mode, kept at least 24 h: the key
row is the request's state, in the spirit of Stripe's design (brandur.org/idempotency-keys).

- `running`: a request holds the key. Its first state change binds the key to the object it
  made or changed (the recovery point); from then on the key always leads to that object.
- `done`: the same key and request answer again with the bound object as it is now (a
  payment whose outcome was unknown shows what it became), or with the stored error.
- `running` but answered (with 503 `psp_outcome_unknown`: its `response` is kept) or dead
  (older than `stale_seconds`) after binding its object: the PSP may have done it, and the
  recovery sweep will say. A retry is told so again at once while the object's operation is
  pending, never shown the object as it was before the operation; the sweep's settle makes
  the key `done`.
- `released`: the request failed with proof that nothing happened (no PSP took it). A retry
  runs again, resuming from the bound object (a create+confirm confirms the same intent).

Same key + different request: 409 `idempotency_key_reused`. Two at once: the second waits
for the first (up to `wait_seconds`), then gets 409 `idempotency_key_in_use`. A key whose
request died before any state change (`running`, unbound, older than `stale_seconds`) is run
again."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from google.protobuf.message import Message
from google.rpc import status_pb2
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_svc.domain.changes import KeyRef
from gateway_svc.tables import idempotency_keys
from paymesh.platform.callers import Merchant
from paymesh.platform.coalesce import Coalescer
from paymesh.platform.db import autocommit
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.errors import ReplayedError, to_status_proto
from paymesh.platform.problems import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PaymeshError,
)

MAX_KEY_LENGTH = 255
# Errors that are the request's own: replayed as they were.
_FINAL_ERRORS = (InvalidArgument, NotFound, FailedPrecondition)
# An error after which the PSP may have done it: the key waits for the outcome.
OUTCOME_UNKNOWN = "psp_outcome_unknown"


@dataclass(frozen=True)
class Claim:
    """The right to run one request under `key` (None: the caller sent no key), or what to
    answer instead: a stored error, or the object the key is bound to."""

    merchant: Merchant
    key: str | None
    replay_error: bytes | None = None
    replay_object: str | None = None
    resume_from: str | None = None  # the object a released request had bound
    # The object whose operation, run under this key, may or may not have happened.
    awaiting_outcome: str | None = None

    @property
    def ref(self) -> KeyRef | None:
        return KeyRef(self.merchant, self.key) if self.key else None

    @property
    def is_replay(self) -> bool:
        return self.replay_error is not None or self.replay_object is not None


class Idempotency:
    def __init__(
        self,
        engine: AsyncEngine,
        direct: DirectSql,
        key_secret: bytes,
        wait_seconds: float = 5.0,
        stale_seconds: float = 60,
    ):
        self._engine = autocommit(engine)
        self._direct = direct  # the first claim of a key, the common case, on the hot path
        self._first_claims = Coalescer(self._claim_first)
        self._key_secret = key_secret
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
        # Merchants choose keys, and some send a card number: only a keyed digest is stored.
        key = hmac.new(self._key_secret, key.encode(), hashlib.sha256).hexdigest()
        pk = _pk(merchant, key)
        deadline = time.monotonic() + self._wait
        while True:
            if await self._first_claims.submit({**pk, "request_hash": digest}):
                return Claim(merchant, key)
            async with self._engine.connect() as connection:
                row = (
                    await connection.execute(select(idempotency_keys).where(*_where(pk)))
                ).first()
                if row is None:
                    continue  # deleted in between: try again
                if row.request_hash != digest:
                    raise Conflict(
                        "this idempotency key was used with a different request",
                        reason="idempotency_key_reused",
                    )
                if row.state == "done":
                    if row.is_error or row.object_id is None:
                        return Claim(merchant, key, replay_error=row.response or b"")
                    return Claim(merchant, key, replay_object=row.object_id)
                stale = time.time() - row.locked_at.timestamp() > self._stale
                if row.state == "released" or (stale and row.object_id is None):
                    taken = await connection.execute(
                        update(idempotency_keys)
                        .where(*_where(pk), idempotency_keys.c.locked_at == row.locked_at)
                        .values(state="running", locked_at=func.now())
                    )
                    if taken.rowcount:
                        return Claim(merchant, key, resume_from=row.object_id)
                elif stale or row.response is not None:  # answered or died, not settled
                    return Claim(merchant, key, awaiting_outcome=row.object_id)
            if time.monotonic() > deadline:
                raise Conflict(
                    "a request with this idempotency key is in progress; retry later",
                    reason="idempotency_key_in_use",
                )
            await asyncio.sleep(0.05)

    async def _claim_first(self, claims: list[dict]) -> list[bool]:
        """Which of `claims` took a key nobody held. Of two claims of one key in one batch,
        the first may win; the other finds the key taken, as it would a moment later."""
        first: dict[tuple, dict] = {}
        for claim in claims:
            first.setdefault((claim["merchant_id"], claim["livemode"], claim["key"]), claim)
        rows = await self._direct.all(_CLAIM, {"claims": json.dumps(list(first.values()))})
        taken = {(row["merchant_id"], row["livemode"], row["key"]) for row in rows}
        answers = []
        for claim in claims:
            key = (claim["merchant_id"], claim["livemode"], claim["key"])
            answers.append(first[key] is claim and key in taken)
        return answers

    async def settle_error(self, claim: Claim, error: Exception) -> None:
        """After a failed request: its own errors are replayed as they were; an unknown PSP
        outcome keeps the key waiting for the recovery sweep; anything else lets it run again."""
        if claim.key is None:
            return
        keys = idempotency_keys.c
        mine = [*_where(_pk(claim.merchant, claim.key)), keys.state == "running"]
        async with self._engine.connect() as connection:
            if isinstance(error, _FINAL_ERRORS):
                status = to_status_proto(error).SerializeToString()
                await connection.execute(
                    update(idempotency_keys)
                    .where(*mine)
                    .values(state="done", response=status, is_error=True)
                )
            elif isinstance(error, PaymeshError) and error.reason == OUTCOME_UNKNOWN:
                # Still running, for the sweep to settle; the kept answer says it ended.
                status = to_status_proto(error).SerializeToString()
                await connection.execute(
                    update(idempotency_keys)
                    .where(*mine, keys.object_id.is_not(None))
                    .values(response=status)
                )
            else:
                await connection.execute(
                    update(idempotency_keys)
                    .where(*mine, keys.object_id.is_not(None))
                    .values(state="released")
                )
                await connection.execute(
                    delete(idempotency_keys).where(*mine, keys.object_id.is_(None))
                )

    @staticmethod
    def replayed_error(claim: Claim) -> ReplayedError:
        return ReplayedError(status_pb2.Status.FromString(claim.replay_error or b""))


# The first claims of keys, for every request that arrives while the last such statement is
# out, in one statement (coalesced): every keyed POST starts with one.
_CLAIM = text(
    """
    INSERT INTO gateway.idempotency_keys (merchant_id, livemode, key, request_hash, state)
    SELECT merchant_id, livemode, key, request_hash, 'running'
    FROM jsonb_to_recordset(CAST(:claims AS jsonb)) AS x(
      merchant_id text, livemode boolean, key text, request_hash text)
    ON CONFLICT DO NOTHING
    RETURNING merchant_id, livemode, key
    """
)


def _pk(merchant: Merchant, key: str) -> dict:
    return {"merchant_id": merchant.id, "livemode": merchant.livemode, "key": key}


def _where(pk: dict):
    return [getattr(idempotency_keys.c, name) == value for name, value in pk.items()]
