"""Who is calling an RPC: a merchant (API key in `authorization`) or another service (a signed
service token), read from the request metadata. Servicers ask for the caller they accept."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import structlog
from sqlalchemy import ColumnElement, Row, Select, Table, bindparam, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from paymesh.platform.problems import InvalidArgument, PermissionDenied, Unauthenticated
from paymesh.platform.service_auth import SERVICE_TOKEN_HEADER, ServiceIdentity, TokenVerifier
from paymesh.platform.tracing import annotate

# Set by a service calling on a merchant's behalf; trusted only with a valid service token.
MERCHANT_HEADER = "x-paymesh-merchant-id"
LIVEMODE_HEADER = "x-paymesh-livemode"


@dataclass(frozen=True)
class Merchant:
    id: str
    livemode: bool


class ApiKeyVerifier(Protocol):
    async def verify(self, api_key: str) -> Merchant | None: ...


def api_key_hash(api_key: str) -> str:
    """API keys are long random strings, so one SHA-256 is enough to store them safely."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def text_metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The call's text metadata (binary values travel under `-bin` keys, which none of ours
    is)."""
    return {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


class Callers:
    def __init__(self, api_keys: ApiKeyVerifier, tokens: TokenVerifier):
        self._api_keys = api_keys
        self._tokens = tokens

    async def merchant(self, context: grpc.aio.ServicerContext[Any, Any]) -> Merchant:
        """The merchant a call acts for: from its API key, or vouched for by a service."""
        metadata = text_metadata(context)
        token = metadata.get(SERVICE_TOKEN_HEADER)
        if token:
            self._tokens.verify(token)
            merchant_id = metadata.get(MERCHANT_HEADER)
            if not merchant_id:
                raise Unauthenticated(
                    f"service call without {MERCHANT_HEADER}", reason="missing_merchant"
                )
            merchant = Merchant(merchant_id, metadata.get(LIVEMODE_HEADER) == "true")
        else:
            merchant = await self._merchant_from_api_key(metadata.get("authorization", ""))
        structlog.contextvars.bind_contextvars(merchant_id=merchant.id, livemode=merchant.livemode)
        annotate(tenant=merchant.id)
        return merchant

    def service(
        self, context: grpc.aio.ServicerContext[Any, Any], allowed: Set[str]
    ) -> ServiceIdentity:
        """The calling service; only the `allowed` ones may proceed."""
        metadata = text_metadata(context)
        token = metadata.get(SERVICE_TOKEN_HEADER)
        if not token:
            raise PermissionDenied("this RPC is internal", reason="service_only")
        identity = self._tokens.verify(token)
        if identity.name not in allowed:
            raise PermissionDenied(
                f"service {identity.name!r} may not call this RPC", reason="service_not_allowed"
            )
        structlog.contextvars.bind_contextvars(caller=identity.name)
        return identity

    async def _merchant_from_api_key(self, authorization: str) -> Merchant:
        scheme, _, api_key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not api_key.strip():
            raise Unauthenticated(
                "no API key: send `Authorization: Bearer sk_test_…`", reason="missing_api_key"
            )
        merchant = await self._api_keys.verify(api_key.strip())
        if merchant is None:
            raise Unauthenticated("invalid API key", reason="invalid_api_key")
        return merchant


class CachedApiKeyVerifier:
    """Remembers answers for a short while, so most calls need no round trip to the gateway.
    A revoked key keeps working for at most `ttl` seconds."""

    def __init__(self, inner: ApiKeyVerifier, ttl: float = 30.0, max_entries: int = 10000):
        self._inner = inner
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[str, tuple[Merchant | None, float]] = {}
        self._generation = 0  # one more at each forget()

    async def verify(self, api_key: str) -> Merchant | None:
        key = api_key_hash(api_key)
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached and cached[1] > now:
            return cached[0]
        generation = self._generation
        merchant = await self._inner.verify(api_key)
        if generation != self._generation:
            return merchant  # forgotten while asked: this answer may predate the change
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (merchant, now + self._ttl)
        return merchant

    def forget(self) -> None:
        """Drops every remembered answer (after a key was revoked)."""
        self._entries.clear()
        self._generation += 1


def owned_by(table: Table, object_id: str, merchant: Merchant) -> Select[Any]:
    """SELECT of one object of the merchant, in the merchant's mode: another merchant's (or the
    other mode's) object is as good as missing, so existence never leaks."""
    return select(table).where(
        table.c.id == object_id,
        table.c.merchant_id == merchant.id,
        table.c.livemode == merchant.livemode,
    )


def owned_by_params(table: Table, prefix: str) -> tuple[ColumnElement[bool], ...]:
    """owned_by's conditions with bound parameters, for a statement built once and run many
    times (platform.direct_sql); their values come from owner_params with the same prefix."""
    return (
        table.c.id == bindparam(f"{prefix}id"),
        table.c.merchant_id == bindparam(f"{prefix}merchant_id"),
        table.c.livemode == bindparam(f"{prefix}livemode"),
    )


def owner_params(prefix: str, object_id: str, merchant: Merchant) -> dict[str, object]:
    return {
        f"{prefix}id": object_id,
        f"{prefix}merchant_id": merchant.id,
        f"{prefix}livemode": merchant.livemode,
    }


async def newest_first_page(
    connection: AsyncConnection,
    table: Table,
    merchant: Merchant,
    limit: int,
    starting_after: str,
    resource: str,
    *filters: ColumnElement[bool],
) -> tuple[Sequence[Row[Any]], bool]:
    """One page of the merchant's objects in the merchant's mode, newest first (created_at,
    then id), after `starting_after` (an id of the merchant's) if given, and whether more
    follow. A cursor that is not the merchant's is invalid input, whatever the filters."""
    scope = (table.c.merchant_id == merchant.id, table.c.livemode == merchant.livemode)
    query = select(table).where(*scope, *filters)
    if starting_after:
        cursor = (
            await connection.execute(
                select(table.c.created_at, table.c.id).where(*scope, table.c.id == starting_after)
            )
        ).first()
        if cursor is None:
            raise InvalidArgument.for_field(
                "starting_after", "resource_missing", f"no such {resource}"
            )
        query = query.where(
            tuple_(table.c.created_at, table.c.id) < tuple_(cursor.created_at, cursor.id)
        )
    rows = (
        await connection.execute(
            query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)
        )
    ).all()
    return rows[:limit], len(rows) > limit
