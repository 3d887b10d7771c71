"""Reads and writes vault_proxy_svc's rows; no protobuf here. Functions taking a connection
run inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.callers import Merchant, owned_by
from paymesh.platform.db import autocommit
from vault_proxy_svc.tables import (
    idempotency_keys,
    outbox,
    payment_methods,
    psp_tokens,
    vault_audit,
)


class PaymentMethodRepository:
    def __init__(self, engine: AsyncEngine):
        self._reads = autocommit(engine)

    async def get(self, token: str, merchant: Merchant) -> Row | None:
        """The merchant's payment method in the merchant's mode; another's is as good as missing."""
        async with self._reads.connect() as connection:
            return await find(connection, token, merchant)

    async def get_with_psp_reference(
        self, token: str, merchant: Merchant, psp: str
    ) -> tuple[Row | None, str | None]:
        """The payment method and its cached PSP reference (if any), in one query."""
        async with self._reads.connect() as connection:
            row = (
                await connection.execute(
                    select(payment_methods, psp_tokens.c.psp_reference)
                    .outerjoin(
                        psp_tokens,
                        (psp_tokens.c.payment_method == payment_methods.c.id)
                        & (psp_tokens.c.psp == psp),
                    )
                    .where(
                        payment_methods.c.id == token,
                        payment_methods.c.merchant_id == merchant.id,
                        payment_methods.c.livemode == merchant.livemode,
                    )
                )
            ).first()
        return (row, row.psp_reference) if row else (None, None)

    async def psp_reference(self, token: str, psp: str) -> str | None:
        async with self._reads.connect() as connection:
            return await connection.scalar(
                select(psp_tokens.c.psp_reference).where(
                    psp_tokens.c.payment_method == token, psp_tokens.c.psp == psp
                )
            )


async def find(
    connection: AsyncConnection, token: str, merchant: Merchant, for_update: bool = False
) -> Row | None:
    query = owned_by(payment_methods, token, merchant)
    if for_update:
        query = query.with_for_update()
    return (await connection.execute(query)).first()


# Statements built once: constructing them per call costs more CPU than running them.
_INSERT_PAYMENT_METHOD = insert(payment_methods).returning(payment_methods)
_INSERT_AUDIT = insert(vault_audit)
_CARD_COLUMNS = tuple(c.name for c in payment_methods.columns if c.name != "created_at")
_AUDIT_COLUMNS = ("actor", "action", "result", "payment_method", "merchant_id", "details")
_EVENT_COLUMNS = ("event_id", "event_type", "aggregate_type", "aggregate_id", "payload", "headers")


def _tokenize_statement():
    """The card, its audit row and its outbox event in ONE statement: atomic on its own, and
    one round trip instead of five (BEGIN, three INSERTs, COMMIT) on the hottest write."""
    card = (
        insert(payment_methods)
        .values({name: bindparam(name) for name in _CARD_COLUMNS})
        .returning(payment_methods)
        .cte("card")
    )
    # Inside a CTE SQLAlchemy cannot fetch generated keys, so the serial ids are left to
    # the database explicitly.
    audit = (
        insert(vault_audit)
        .values(id=literal_column("DEFAULT"))
        .values({name: bindparam(f"audit_{name}") for name in _AUDIT_COLUMNS})
        .cte("audit")
    )
    event = (
        insert(outbox)
        .values(id=literal_column("DEFAULT"))
        .values({name: bindparam(f"event_{name}") for name in _EVENT_COLUMNS})
        .cte("event")
    )
    return select(card).add_cte(audit, event)


def _bind_key_statement():
    """Marks a running idempotency key done and bound to its payment method, on condition
    that the request still holds it (`key_locked_at`)."""
    keys = idempotency_keys.c
    return (
        update(idempotency_keys)
        .where(
            keys.merchant_id == bindparam("key_merchant_id"),
            keys.livemode == bindparam("key_livemode"),
            keys.key == bindparam("key_key"),
            keys.state == literal_column("'running'"),
            keys.locked_at == bindparam("key_locked_at"),
        )
        # Constants as SQL: SQLAlchemy loses anonymous parameters of DML inside a CTE.
        .values(state=literal_column("'done'"), object_id=bindparam("key_object_id"))
    )


def _from(source, table, names: tuple[str, ...], prefix: str = ""):
    """INSERT INTO table (names) SELECT :prefix+names FROM source: one row per source row."""
    values = select(
        *[bindparam(f"{prefix}{name}", type_=table.c[name].type) for name in names]
    ).select_from(source)
    return insert(table).from_select(list(names), values)


def _tokenize_bound_statement():
    """As _tokenize_statement, and the request's idempotency key bound to the card: the card,
    audit and event are written only if the key is still the request's, all in ONE
    statement. Without the key nothing is written and no row comes back."""
    bound = _bind_key_statement().returning(idempotency_keys.c.object_id).cte("bound")
    # Prefixed names throughout: a parameter named like a column of the UPDATE's table
    # (merchant_id, livemode) would become part of its SET clause.
    card = (
        _from(bound, payment_methods, _CARD_COLUMNS, "card_").returning(payment_methods).cte("card")
    )
    audit = _from(card, vault_audit, _AUDIT_COLUMNS, "audit_").cte("audit")
    event = _from(card, outbox, _EVENT_COLUMNS, "event_").cte("event")
    return select(card).add_cte(bound, audit, event)


_TOKENIZE = _tokenize_statement()
_TOKENIZE_BOUND = _tokenize_bound_statement()
_BIND_KEY = _bind_key_statement()


async def insert_tokenized(
    connection: AsyncConnection,
    card: dict[str, Any],
    audit: dict[str, Any],
    event: dict[str, Any],
    key: dict[str, Any] | None = None,
) -> Row | None:
    """The new card; with `key` (KeyClaim.bind_params), None if the key is no longer held."""
    params = {
        **{f"audit_{name}": audit.get(name) for name in _AUDIT_COLUMNS},
        **{f"event_{name}": event[name] for name in _EVENT_COLUMNS},
    }
    if key is None:
        params.update({name: card.get(name) for name in _CARD_COLUMNS})
        return (await connection.execute(_TOKENIZE, params)).one()
    params.update({f"card_{name}": card.get(name) for name in _CARD_COLUMNS})
    params.update(key, key_object_id=card["id"])
    return (await connection.execute(_TOKENIZE_BOUND, params)).first()


async def bind_key(connection: AsyncConnection, key: dict[str, Any], object_id: str) -> bool:
    """Binds a held idempotency key to `object_id`; False if the request no longer holds it."""
    result = await connection.execute(_BIND_KEY, {**key, "key_object_id": object_id})
    return result.rowcount == 1


async def insert_payment_method(connection: AsyncConnection, values: dict[str, Any]) -> Row:
    return (await connection.execute(_INSERT_PAYMENT_METHOD, values)).one()


async def shred(connection: AsyncConnection, token: str) -> Row:
    """Destroys the card data: without its wrapped data key the ciphertext is noise."""
    await connection.execute(delete(psp_tokens).where(psp_tokens.c.payment_method == token))
    result = await connection.execute(
        update(payment_methods)
        .where(payment_methods.c.id == token)
        .values(
            wrapped_key=None, nonce=None, ciphertext=None, kek_version=None, detached_at=func.now()
        )
        .returning(payment_methods)
    )
    return result.one()


async def save_psp_reference(
    connection: AsyncConnection, token: str, psp: str, reference: str
) -> str:
    """Stores the mapping; if a concurrent call stored one first, that one wins."""
    await connection.execute(
        pg_insert(psp_tokens)
        .values(payment_method=token, psp=psp, psp_reference=reference)
        .on_conflict_do_nothing()
    )
    return await connection.scalar(
        select(psp_tokens.c.psp_reference).where(
            psp_tokens.c.payment_method == token, psp_tokens.c.psp == psp
        )
    )


async def add_audit(
    connection: AsyncConnection,
    *,
    actor: str,
    action: str,
    result: str,
    payment_method: str | None = None,
    merchant_id: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await connection.execute(
        _INSERT_AUDIT,
        {
            "actor": actor,
            "action": action,
            "result": result,
            "payment_method": payment_method,
            "merchant_id": merchant_id,
            "reason": reason,
            "details": details or {},
        },
    )
