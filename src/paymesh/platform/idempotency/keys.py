"""The pure rules of idempotency keys; no I/O here.

A key row's life:
- `running`: a request holds the key, since `locked_at`: that time is the claim's fence. Its
  first state change binds the key to the object it made or changed (the recovery point);
  from then on the key always leads to that object. Binding and settling are conditional on
  the fence, so a holder that was taken over (it looked dead) cannot settle over the newer
  one.
- `done`: the same key and request answer again with the bound object as it is now, with the
  stored answer (an RPC that makes no object), or with the stored error.
- `running` but answered (its `response` kept: the outcome is unknown) or dead (older than
  the stale time) after binding its object: something outside may have done it, and a sweep
  will say. A retry is told so, never shown the object as it was before.
- `released`: the request failed with proof that nothing happened. A retry runs again,
  resuming from the bound object.

Same key + different request: 409 `idempotency_key_reused`. Two at once: the second waits for
the first, then gets 409 `idempotency_key_in_use`. A key whose request died before binding
anything (`running`, unbound, stale) is run again.

What is stored of a key and of its request are keyed digests: a merchant may send anything
as a key, a card number included, and a request may hold a card number and a CVC."""

from __future__ import annotations

import functools
import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import Message

from paymesh.platform.callers import Merchant
from paymesh.platform.problems import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PaymeshError,
)

KEY_FIELD = "idempotency-key"  # gRPC metadata; the `Idempotency-Key` header through Envoy
MAX_KEY_LENGTH = 255
# Printable ASCII, as HTTP header values and gRPC ASCII metadata are.
_KEY_CHARACTERS = re.compile(r"[\x20-\x7e]+")
# An error after which something outside (a PSP) may have done it: the key waits.
OUTCOME_UNKNOWN = "psp_outcome_unknown"
# Errors that are the request's own: replayed as they were.
FINAL_ERRORS = (InvalidArgument, NotFound, FailedPrecondition)

_KEY_CONTEXT = b"paymesh idempotency key v2"
_REQUEST_CONTEXT = b"paymesh idempotency request v2"


def checked_key(raw: str | None) -> str | None:
    """The caller's key, or None when it sent none; one that cannot be a key is bad input."""
    if not raw:
        return None
    if len(raw) > MAX_KEY_LENGTH or not _KEY_CHARACTERS.fullmatch(raw):
        raise InvalidArgument.for_field(
            KEY_FIELD,
            "invalid_idempotency_key",
            f"at most {MAX_KEY_LENGTH} printable ASCII characters",
        )
    return raw


@functools.lru_cache(maxsize=16)
def _derived(secret: bytes, context: bytes) -> bytes:
    if not secret:
        raise RuntimeError("the idempotency key secret is not loaded")
    return hmac.digest(secret, context, "sha256")


def key_digest(secret: bytes, merchant: Merchant, key: str) -> str:
    """What the table stores for a merchant's key (64 hex characters)."""
    scoped = f"{merchant.id}\0{int(merchant.livemode)}\0{key}".encode()
    return hmac.digest(_derived(secret, _KEY_CONTEXT), scoped, "sha256").hex()


def request_digest(secret: bytes, method: str, request: Message) -> str:
    """The request's fingerprint: keyed, so that it reveals nothing of what it holds."""
    canonical = method.encode() + b"\0" + request.SerializeToString(deterministic=True)
    return hmac.digest(_derived(secret, _REQUEST_CONTEXT), canonical, "sha256").hex()


@dataclass(frozen=True)
class StoredKey:
    """A key's row as the rules need it."""

    request_hash: str
    state: str  # running | done | released
    locked_at: datetime
    object_id: str | None = None
    response: bytes | None = None
    is_error: bool = False


@dataclass(frozen=True)
class Replay:
    """Answer as before: the stored error, the stored answer, or the bound object as it is."""

    error: bytes | None = None
    response: bytes | None = None
    object_id: str | None = None


@dataclass(frozen=True)
class TakeOver:
    """Run the request again, resuming from `resume_from` (the object a released or dead
    request had bound, if any), once the key is taken from the row's `locked_at`."""

    resume_from: str | None


@dataclass(frozen=True)
class AwaitOutcome:
    """The object's operation, run under this key, may or may not have happened."""

    object_id: str | None


@dataclass(frozen=True)
class Wait:
    """Another request holds the key: look again shortly."""


Verdict = Replay | TakeOver | AwaitOutcome | Wait


def in_use() -> Conflict:
    return Conflict(
        "a request with this idempotency key is in progress; retry later",
        reason="idempotency_key_in_use",
    )


def verdict(row: StoredKey, request_hash: str, age_seconds: float, stale_seconds: float) -> Verdict:
    """What a request under an existing key must do, from the key's row alone: nothing else
    (a clock, another service, the object's current fields) is looked at before it."""
    if not hmac.compare_digest(row.request_hash, request_hash):
        raise Conflict(
            "this idempotency key was used with a different request",
            reason="idempotency_key_reused",
        )
    if row.state == "done":
        if row.is_error:
            return Replay(error=row.response or b"")
        if row.object_id is None:
            return Replay(response=row.response or b"")
        return Replay(object_id=row.object_id)
    stale = age_seconds > stale_seconds
    if row.state == "released" or (stale and row.object_id is None):
        return TakeOver(resume_from=row.object_id)
    if stale or row.response is not None:  # answered or died after binding, not settled
        return AwaitOutcome(row.object_id)
    return Wait()


def settlement(error: Exception) -> str:
    """What a failed request leaves on its key: `store` its own error to replay it, `await`
    the outcome something outside may have reached, or `release` it to run again."""
    if isinstance(error, FINAL_ERRORS):
        return "store"
    if isinstance(error, PaymeshError) and error.reason == OUTCOME_UNKNOWN:
        return "await"
    return "release"
