"""The idempotency key of the call in hand, and the one decorator of every keyed RPC.

The server interceptor reads the `idempotency-key` metadata once and checks it (`call_key`);
the servicer gets it through the call's context (a context variable the interceptor sets for
the call). A key that cannot be one is told only once the caller is authenticated: nothing
of a request is looked at before that."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol, cast

import grpc
from google.protobuf.message import Message

from paymesh.platform.callers import Callers, Merchant
from paymesh.platform.idempotency.keys import KEY_FIELD, checked_key
from paymesh.platform.idempotency.store import Claim, Idempotency, replayed_error
from paymesh.platform.problems import InvalidArgument

_CALL_KEY: ContextVar[str | InvalidArgument | None] = ContextVar("idempotency_key", default=None)

REPLAYED = (("idempotent-replayed", "true"),)


@contextlib.contextmanager
def call_key(metadata: Iterable[tuple[str, str | bytes]] | None) -> Iterator[None]:
    """For the interceptor: the call's key, read and checked, while the call runs."""
    raw = None
    for name, value in metadata or ():
        if name == KEY_FIELD and isinstance(value, str):
            raw = value
    try:
        key: str | InvalidArgument | None = checked_key(raw)
    except InvalidArgument as invalid:
        key = invalid
    token = _CALL_KEY.set(key)
    try:
        yield
    finally:
        _CALL_KEY.reset(token)


def request_key() -> str | None:
    """The key the caller sent with this call (None: none); a bad one is refused here."""
    key = _CALL_KEY.get()
    if isinstance(key, InvalidArgument):
        raise key
    return key


class IdempotentServicer(Protocol):
    idempotency: Idempotency
    callers: Callers

    async def replay(self, claim: Claim) -> Message:
        """The answer to a retry: the object the key is bound to (`claim.replay_object`), or
        whose outcome is awaited (`claim.awaiting_outcome`), as it is now."""
        ...


class _AnObject(Protocol):
    """The response of an RPC that makes or changes an object: the object."""

    id: str


Rpc = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]


def idempotent(
    *,
    answer: type[Message] | None = None,
    binds: bool = False,
    first_use: bool = False,
    replay: Callable[[Any, Claim], Awaitable[Message]] | None = None,
) -> Callable[[Callable[..., Awaitable[Message | None]]], Rpc]:
    """Makes `rpc(self, request, context, claim)` a keyed RPC: run at most once per key; a
    retry is answered from what the key stored, before anything else is looked at.

    - `answer`: the response type of an RPC that makes no object: its answer is stored and
      replayed as it was. Otherwise a retry is shown the object: `replay(servicer, claim)`,
      by default `servicer.replay(claim)`.
    - `binds`: the use case binds its key (`store.bind_key`, or its own statement on the
      `Claim.bind_params`) in the transaction that makes its change, the recovery point.
      Otherwise the key is settled on the response's `id` once the RPC returns.
    - `first_use`: a keyed call is first tried with a `NewKey` (one statement makes the object
      and stores its key); the RPC returns None when the key exists, and is run again under
      a claim."""

    def decorate(rpc: Callable[..., Awaitable[Message | None]]) -> Rpc:
        method = rpc.__name__

        @functools.wraps(rpc)
        async def keyed(
            self: IdempotentServicer, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Message:
            merchant: Merchant = await self.callers.merchant(context)
            key = request_key()
            keys = self.idempotency
            if first_use and key is not None:
                made = await rpc(
                    self, request, context, keys.first_use(merchant, key, method, request)
                )
                if made is not None:
                    return made
            claim = await keys.claim(merchant, key, method, request)
            if claim.answered:
                stored = claim.replay
                if stored is not None and stored.error is not None:
                    await context.send_initial_metadata(REPLAYED)
                    raise replayed_error(stored)
                if answer is not None and stored is not None and stored.object_id is None:
                    response = answer.FromString(stored.response or b"")
                elif replay is not None:
                    response = await replay(self, claim)
                else:
                    response = await self.replay(claim)
                await context.send_initial_metadata(REPLAYED)
                return response
            try:
                result = await rpc(self, request, context, claim)
            except Exception as error:
                await keys.settle_error(claim, error)
                raise
            if result is None:
                raise RuntimeError(f"{method} answered nothing under a claim")
            if not binds:
                if answer is not None:
                    await keys.settle(claim, None, result.SerializeToString())
                else:
                    await keys.settle(claim, cast(_AnObject, result).id, None)
            return result

        return keyed

    return decorate
