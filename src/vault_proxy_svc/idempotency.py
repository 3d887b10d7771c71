"""Idempotency keys on tokenize and detach, scoped per merchant and mode: the same protocol as
gateway_svc's keys (gateway_svc/idempotency.py), for requests that have no outside call in
the middle, so a key is only ever `running` or `done`.

- `running`: a request holds the key (since `locked_at`). The statement that makes or
  detaches the payment method also binds the key to it and marks it `done`, on condition
  that the request still holds the key: a key never leads to two tokens.
- A valid tokenization skips `running`: its statement stores the key `done` and bound to the
  new card, unless the key exists (then nothing is written, and the request is answered as
  a retry through `claim`). One round trip instead of two on the hottest write.
- `done`: the same key and request answer again with the bound payment method as it is now
  (`idempotent-replayed: true`), or with the stored error (invalid input, not found).
- A request that failed otherwise (the vault's database or KMS unavailable) did nothing: its
  key is deleted and a retry runs again.

Same key + different request: 409 `idempotency_key_reused`. Two at once: the second waits
for the first (up to `wait_seconds`), then gets 409 `idempotency_key_in_use`. A key whose
request died while `running` (older than `stale_seconds`) runs again.

The request fingerprint is an HMAC-SHA256 under a key derived from the vault's fingerprint
secret: a tokenization request holds a card number and a CVC, and a plain hash of it could
be brute-forced over the card space. Nothing else of the request is stored. The key itself
is stored as an HMAC too (another derived key): a merchant may send anything as a key, a card
number included, and the vault's tables hold no card number in clear."""

from __future__ import annotations

import asyncio
import functools
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Merchant
from paymesh.platform.db import autocommit
from paymesh.platform.errors import ReplayedError, to_status_proto
from paymesh.platform.problems import Conflict, FailedPrecondition, InvalidArgument, NotFound
from vault_proxy_svc.tables import idempotency_keys

MAX_KEY_LENGTH = 255
KEY_FIELD = "idempotency-key"
# Printable ASCII, as HTTP header values and gRPC ASCII metadata are.
_KEY_CHARACTERS = re.compile(r"[\x20-\x7e]+")
# Errors that are the request's own: replayed as they were.
_FINAL_ERRORS = (InvalidArgument, NotFound, FailedPrecondition)
_DIGEST_CONTEXT = b"paymesh vault idempotency request v1"
_KEY_CONTEXT = b"paymesh vault idempotency key v1"


def idempotency_key(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's key (the `Idempotency-Key` header through Envoy), checked; None if none."""
    key = dict(context.invocation_metadata() or ()).get(KEY_FIELD)
    if not key:
        return None
    if len(key) > MAX_KEY_LENGTH or not _KEY_CHARACTERS.fullmatch(key):
        raise InvalidArgument.for_field(
            KEY_FIELD,
            "invalid_idempotency_key",
            f"at most {MAX_KEY_LENGTH} printable ASCII characters",
        )
    return key


@functools.lru_cache(maxsize=8)
def _derived(secret: bytes, context: bytes) -> bytes:
    # Cached: the same few (secret, context) pairs every call, and the secret is in this
    # process's memory for as long as the vault runs anyway.
    if not secret:
        raise RuntimeError("the vault's fingerprint secret is not loaded")
    return hmac.digest(secret, context, "sha256")


def request_digest(secret: bytes, method: str, request: Message) -> str:
    """The request's fingerprint: keyed, so that it reveals nothing of the card it holds."""
    canonical = method.encode() + b"\0" + request.SerializeToString(deterministic=True)
    return hmac.digest(_derived(secret, _DIGEST_CONTEXT), canonical, "sha256").hex()


def key_digest(secret: bytes, key: str) -> str:
    """What the table stores for the caller's key (64 hex characters)."""
    return hmac.digest(_derived(secret, _KEY_CONTEXT), key.encode(), "sha256").hex()


def _key_bind_params(merchant: Merchant, key: str) -> dict:
    """The stored key's row, as the statements that bind it name its columns."""
    return {"key_merchant_id": merchant.id, "key_livemode": merchant.livemode, "key_key": key}


@dataclass(frozen=True)
class KeyClaim:
    """The right to run one request under `key` (as stored: key_digest of the caller's key),
    held since `locked_at`: the change that the request makes binds the key on condition
    that both still hold."""

    merchant: Merchant
    key: str
    locked_at: datetime

    @property
    def bind_params(self) -> dict:
        return {**_key_bind_params(self.merchant, self.key), "key_locked_at": self.locked_at}


@dataclass(frozen=True)
class NewKey:
    """A key this request means to be the first to use (as stored: key_digest), with the
    request's fingerprint: stored `done` by the statement that makes the card, if it does
    not exist yet."""

    merchant: Merchant
    key: str
    request_hash: str

    @property
    def bind_params(self) -> dict:
        return {**_key_bind_params(self.merchant, self.key), "key_request_hash": self.request_hash}


@dataclass(frozen=True)
class Claim:
    """What to do with a request: run it (holding `key`, None when it came without a key),
    or answer with a stored error or with the payment method the key is bound to."""

    key: KeyClaim | None = None
    replay_error: bytes | None = None
    replay_object: str | None = None

    @property
    def is_replay(self) -> bool:
        return self.replay_error is not None or self.replay_object is not None


def key_lost() -> Conflict:
    """The request's key was taken over while it ran (it had looked dead): nothing was done."""
    return Conflict(
        "a request with this idempotency key is in progress; retry later",
        reason="idempotency_key_in_use",
    )


class Idempotency:
    def __init__(
        self,
        engine: AsyncEngine,
        secret: Callable[[], bytes],
        wait_seconds: float = 5.0,
        stale_seconds: float = 60,
    ):
        self._engine = autocommit(engine)
        self._secret = secret
        self._wait = wait_seconds
        self._stale = stale_seconds

    def first_use(self, merchant: Merchant, key: str, method: str, request: Message) -> NewKey:
        """`key` as the tokenization's statement stores it when no request has used it yet."""
        secret = self._secret()
        return NewKey(merchant, key_digest(secret, key), request_digest(secret, method, request))

    async def claim(
        self, merchant: Merchant, key: str | None, method: str, request: Message
    ) -> Claim:
        if not key:
            return Claim()
        secret = self._secret()
        digest = request_digest(secret, method, request)
        key = key_digest(secret, key)
        pk = _pk(merchant, key)
        keys = idempotency_keys.c
        deadline = time.monotonic() + self._wait
        while True:
            async with self._engine.connect() as connection:
                locked_at = await connection.scalar(
                    insert(idempotency_keys)
                    .values(**pk, request_hash=digest, state="running")
                    .on_conflict_do_nothing()
                    .returning(keys.locked_at)
                )
                if locked_at is not None:
                    return Claim(KeyClaim(merchant, key, locked_at))
                row = (
                    await connection.execute(select(idempotency_keys).where(*_where(pk)))
                ).first()
                if row is None:
                    continue  # deleted in between: try again
                if not hmac.compare_digest(row.request_hash, digest):
                    raise Conflict(
                        "this idempotency key was used with a different request",
                        reason="idempotency_key_reused",
                    )
                if row.state == "done":
                    if row.is_error or row.object_id is None:
                        return Claim(replay_error=row.response or b"")
                    return Claim(replay_object=row.object_id)
                if time.time() - row.locked_at.timestamp() > self._stale:
                    taken = await connection.scalar(
                        update(idempotency_keys)
                        .where(
                            *_where(pk), keys.state == "running", keys.locked_at == row.locked_at
                        )
                        .values(locked_at=func.clock_timestamp())
                        .returning(keys.locked_at)
                    )
                    if taken is not None:
                        return Claim(KeyClaim(merchant, key, taken))
            if time.monotonic() > deadline:
                raise key_lost()
            await asyncio.sleep(0.05)

    async def settle_error(self, claim: Claim, error: Exception) -> None:
        """After a failed request: its own errors are replayed as they were; after anything
        else nothing happened, and the key is free to run again."""
        if claim.key is None:
            return
        keys = idempotency_keys.c
        mine = [
            *_where(_pk(claim.key.merchant, claim.key.key)),
            keys.state == "running",
            keys.locked_at == claim.key.locked_at,
        ]
        async with self._engine.connect() as connection:
            if isinstance(error, _FINAL_ERRORS):
                status = to_status_proto(error).SerializeToString()
                await connection.execute(
                    update(idempotency_keys)
                    .where(*mine)
                    .values(state="done", response=status, is_error=True)
                )
            else:
                await connection.execute(delete(idempotency_keys).where(*mine))

    @staticmethod
    def replayed_error(claim: Claim) -> ReplayedError:
        return ReplayedError(status_pb2.Status.FromString(claim.replay_error or b""))


def _pk(merchant: Merchant, key: str) -> dict:
    return {"merchant_id": merchant.id, "livemode": merchant.livemode, "key": key}


def _where(pk: dict):
    return [getattr(idempotency_keys.c, name) == value for name, value in pk.items()]
