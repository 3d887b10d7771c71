"""`CardStore` on PostgreSQL; no protobuf here.

The statements of the hot calls (tokenize, the PSP reference lookup, reads by id) are built
once with SQLAlchemy Core and run straight on psycopg (DirectSql), one round trip each. Detach
and caching a PSP's reference run several statements in one transaction (rare)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    String,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.callers import Merchant, owned_by, owned_by_params, owner_params
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.idempotency.keys import in_use
from paymesh.platform.idempotency.store import Claim, NewKey
from paymesh.platform.outbox import add_event, event_values, snapshot, snapshot_column
from vault_proxy_svc.models import (
    SEALED_COLUMNS,
    AuditEntry,
    CachedReference,
    CardAtPsp,
    CardSummary,
    PaymentMethod,
    require_attached,
)
from vault_proxy_svc.tables import (
    idempotency_keys,
    outbox,
    payment_methods,
    psp_tokens,
    vault_audit,
)


def _owned(merchant: Merchant, token: str) -> dict[str, Any]:
    return owner_params("pm_", token, merchant)


class PostgresCardStore:
    def __init__(self, engine: AsyncEngine, direct: DirectSql):
        self._engine = engine
        self._direct = direct

    async def get(self, token: str, merchant: Merchant) -> PaymentMethod | None:
        row = await self._direct.one(_SELECT_OWNED, _owned(merchant, token))
        return None if row is None else PaymentMethod.of(row)

    async def psp_reference(
        self, token: str, merchant: Merchant, psp: str
    ) -> CachedReference | None:
        row = await self._direct.one(_SELECT_PSP_REFERENCE, {**_owned(merchant, token), "psp": psp})
        return None if row is None else CachedReference(row["detached_at"], row["psp_reference"])

    async def get_with_psp_reference(
        self, token: str, merchant: Merchant, psp: str
    ) -> CardAtPsp | None:
        row = await self._direct.one(
            _SELECT_WITH_PSP_REFERENCE, {**_owned(merchant, token), "psp": psp}
        )
        return None if row is None else CardAtPsp(PaymentMethod.of(row), row["psp_reference"])

    async def summaries(self, tokens: Sequence[str]) -> list[CardSummary]:
        rows = await self._direct.all(_SELECT_SUMMARIES, {"tokens": list(tokens)})
        return [CardSummary.of(row) for row in rows]

    async def psps_holding(self, token: str) -> set[str]:
        rows = await self._direct.all(_SELECT_PSPS_HOLDING, {"token": token})
        return {row["psp"] for row in rows}

    async def insert_tokenized(
        self, card: PaymentMethod, audit: AuditEntry, key: Claim | NewKey | None = None
    ) -> PaymentMethod | None:
        event = event_values(
            event_type="payment_method.created",
            aggregate_type="payment_method",
            aggregate_id=card.id,
            payload={},  # the card's row as written: see _card_event
        )
        columns = card.columns()
        params = {
            **{f"audit_{name}": getattr(audit, name) for name in _AUDIT_COLUMNS},
            **{f"event_{name}": event[name] for name in _EVENT_COLUMNS},
        }
        if key is None:
            params.update({name: columns[name] for name in _CARD_COLUMNS})
            row = await self._direct.one(_TOKENIZE, params)
        else:
            params.update({f"card_{name}": columns[name] for name in _CARD_COLUMNS})
            params.update(key.bind_params, key_object_id=card.id)
            statement = _TOKENIZE_BOUND if isinstance(key, Claim) else _TOKENIZE_NEW_KEY
            row = await self._direct.one(statement, params)
        return None if row is None else PaymentMethod.of(row)

    async def detach(
        self, token: str, merchant: Merchant, audit: AuditEntry, key: Claim | None = None
    ) -> PaymentMethod:
        async with self._engine.begin() as connection:
            found = await _find_for_update(connection, token, merchant)
            require_attached(None if found is None else PaymentMethod.of(found))
            row = await _shred(connection, token)
            if key and not await _bind_key(connection, key.bind_params, token):
                raise in_use()  # rolls the detach back
            await add_audit(connection, audit)
            await add_event(
                connection,
                outbox,
                event_type="payment_method.detached",
                aggregate_type="payment_method",
                aggregate_id=token,
                payload=snapshot(row, *SEALED_COLUMNS),
            )
        return PaymentMethod.of(row)

    async def save_psp_reference(
        self,
        token: str,
        psp: str,
        reference: str,
        audit: AuditEntry,
        replacing: str | None = None,
    ) -> str | None:
        async with self._engine.begin() as connection:
            saved = await _save_psp_reference(connection, token, psp, reference, replacing)
            if saved is None:
                return None
            details = {**audit.details, "psp_reference": saved}
            await add_audit(connection, dataclasses.replace(audit, details=details))
        return saved

    async def add_audit(self, entry: AuditEntry) -> None:
        async with self._engine.begin() as connection:
            await add_audit(connection, entry)


# The merchant's payment method in the merchant's mode (parameters: _owned).
_OWNED = owned_by_params(payment_methods, "pm_")
_SELECT_OWNED = select(payment_methods).where(*_OWNED)
_WITH_PSP_TOKEN = payment_methods.outerjoin(
    psp_tokens,
    (psp_tokens.c.payment_method == payment_methods.c.id) & (psp_tokens.c.psp == bindparam("psp")),
)
_SELECT_WITH_PSP_REFERENCE = _SELECT_OWNED.add_columns(psp_tokens.c.psp_reference).select_from(
    _WITH_PSP_TOKEN
)
# The masked columns only: a screen's read never touches the sealed number.
_SELECT_SUMMARIES = select(
    payment_methods.c.id,
    payment_methods.c.brand,
    payment_methods.c.last4,
    payment_methods.c.fingerprint,
    payment_methods.c.exp_month,
    payment_methods.c.exp_year,
).where(payment_methods.c.id == any_(bindparam("tokens", type_=ARRAY(String))))
_SELECT_PSPS_HOLDING = select(psp_tokens.c.psp).where(
    psp_tokens.c.payment_method == bindparam("token")
)
_SELECT_PSP_REFERENCE = (
    select(payment_methods.c.detached_at, psp_tokens.c.psp_reference)
    .select_from(_WITH_PSP_TOKEN)
    .where(*_OWNED)
)


async def _find_for_update(
    connection: AsyncConnection, token: str, merchant: Merchant
) -> dict[str, Any] | None:
    query = owned_by(payment_methods, token, merchant).with_for_update()
    row = (await connection.execute(query)).first()
    return None if row is None else dict(row._mapping)


# Statements built once: constructing them per call costs more CPU than running them.
_INSERT_AUDIT = insert(vault_audit)
_CARD_COLUMNS = tuple(c.name for c in payment_methods.columns if c.name != "created_at")
_AUDIT_COLUMNS = ("actor", "action", "result", "payment_method", "merchant_id", "details")
# An event's columns but its payload: the card's row as written, its sealed number left out.
_EVENT_COLUMNS = ("event_id", "event_type", "aggregate_type", "aggregate_id", "headers")


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
    return select(card).add_cte(audit, _card_event(card))


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


def _card_event(card):
    """The card's event (one per row of `card`), carrying the card's row as written but its
    sealed number."""
    envelope = [bindparam(f"event_{name}", type_=outbox.c[name].type) for name in _EVENT_COLUMNS]
    values = select(*envelope, snapshot_column(card.name, *SEALED_COLUMNS)).select_from(card)
    return insert(outbox).from_select([*_EVENT_COLUMNS, "payload"], values).cte("event")


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
    return select(card).add_cte(bound, audit, _card_event(card))


def _tokenize_new_key_statement():
    """As _tokenize_bound_statement for a key not stored yet: the key is stored done and bound
    to the card, and the card, audit and event written, in ONE statement (instead of one to
    claim the key and one to tokenize). A key that exists already is left alone (ON CONFLICT,
    after a concurrent first use commits) and then nothing is written: the request is a
    retry, answered from the stored key."""
    keys = idempotency_keys.c
    stored = (
        pg_insert(idempotency_keys)
        .values(
            merchant_id=bindparam("key_merchant_id"),
            livemode=bindparam("key_livemode"),
            key=bindparam("key_key"),
            request_hash=bindparam("key_request_hash"),
            state=literal_column("'done'"),
            object_id=bindparam("key_object_id"),
        )
        .on_conflict_do_nothing()
        .returning(keys.object_id)
        .cte("stored_key")
    )
    card = (
        _from(stored, payment_methods, _CARD_COLUMNS, "card_")
        .returning(payment_methods)
        .cte("card")
    )
    audit = _from(card, vault_audit, _AUDIT_COLUMNS, "audit_").cte("audit")
    return select(card).add_cte(stored, audit, _card_event(card))


_TOKENIZE = _tokenize_statement()
_TOKENIZE_BOUND = _tokenize_bound_statement()
_TOKENIZE_NEW_KEY = _tokenize_new_key_statement()
_BIND_KEY = _bind_key_statement()


async def _bind_key(connection: AsyncConnection, key: dict[str, Any], object_id: str) -> bool:
    """Binds a held idempotency key to `object_id`; False if the request no longer holds it."""
    result = await connection.execute(_BIND_KEY, {**key, "key_object_id": object_id})
    return result.rowcount == 1


async def _shred(connection: AsyncConnection, token: str) -> dict[str, Any]:
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
    return dict(result.one()._mapping)


async def _save_psp_reference(
    connection: AsyncConnection, token: str, psp: str, reference: str, replacing: str | None
) -> str | None:
    """The reference stored (see PostgresCardStore.save_psp_reference); the card's row is
    locked against a concurrent detach until the caller commits."""
    detached = await connection.scalar(
        select(payment_methods.c.detached_at)
        .where(payment_methods.c.id == token)
        .with_for_update(read=True)
    )
    if detached is not None:
        return None
    if replacing is not None:
        await connection.execute(
            update(psp_tokens)
            .where(
                psp_tokens.c.payment_method == token,
                psp_tokens.c.psp == psp,
                psp_tokens.c.psp_reference == replacing,
            )
            .values(psp_reference=reference, created_at=func.now())
        )
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


async def add_audit(connection: AsyncConnection, entry: AuditEntry) -> None:
    """An audit row in the caller's transaction (also key rotation's, see kek.py)."""
    await connection.execute(
        _INSERT_AUDIT,
        {
            "actor": entry.actor,
            "action": entry.action,
            "result": entry.result,
            "payment_method": entry.payment_method,
            "merchant_id": entry.merchant_id,
            "reason": entry.reason,
            "details": entry.details,
        },
    )
