"""An intent's reads, its insert and its conditional changes (`change_statement`: the
transition table's statuses in the SQL `WHERE`), each ONE statement with its audit rows, its
outbox event and its idempotency key; and the payment methods the vault revoked."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import String, any_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_svc.domain.changes import IntentChange, KeyRef
from gateway_svc.domain.models import AuditEntry, Event, PaymentIntent
from gateway_svc.repository.rows import audit_values, event_envelope, to_intent
from gateway_svc.repository.statements import (
    BIND_KEY,
    key_params,
    key_where,
    one,
    prefixed,
    side_effects,
)
from gateway_svc.tables import (
    idempotency_keys,
    merchants,
    payment_audit,
    payment_intents,
    revoked_payment_methods,
)
from paymesh.platform.callers import Merchant
from paymesh.platform.db import constant
from paymesh.platform.direct_sql import DirectSql

INSERTED_INTENT_COLUMNS = (
    "id",
    "merchant_id",
    "livemode",
    "amount",
    "currency",
    "status",
    "capture_method",
    "payment_method",
    "description",
    "metadata",
    "psp",
    "attempt_key",
    "pending_operation",
    "pending_key",
    "pending_since",
    "return_url",
)


class Intents:
    """The intent half of PaymentRepository (gateway_svc.repository.payments). `_direct`: the
    statements of the payment path run straight on psycopg."""

    _engine: AsyncEngine
    _direct: DirectSql

    async def intent(self, intent_id: str, merchant: Merchant | None = None) -> PaymentIntent:
        """The intent (the merchant's, in its mode, when given); NotFound otherwise."""
        return to_intent(await one(self._direct, payment_intents, intent_id, merchant))

    async def psp_route(self, merchant_id: str) -> list[str]:
        row = await self._direct.one(_PSP_ROUTE, {"m_id": merchant_id})
        return list((row or {}).get("psp_routing") or [])

    async def insert_intent(
        self,
        intent: PaymentIntent,
        audits: list[AuditEntry],
        event: Event,
        bind: KeyRef | None,
    ) -> PaymentIntent:
        """A new intent, its audit rows, its event and its key's binding in ONE statement."""
        inserted = await self._insert_intent(intent, audits, event, bind, unless_revoked=False)
        assert inserted is not None  # an INSERT … RETURNING returns its row or raises
        return inserted

    async def insert_intent_unless_revoked(
        self,
        intent: PaymentIntent,
        audits: list[AuditEntry],
        event: Event,
        bind: KeyRef | None,
    ) -> PaymentIntent | None:
        """As insert_intent, in the same one statement, unless the intent's payment method was
        revoked: then nothing is written and the answer is None."""
        return await self._insert_intent(intent, audits, event, bind, unless_revoked=True)

    async def _insert_intent(
        self,
        intent: PaymentIntent,
        audits: list[AuditEntry],
        event: Event,
        bind: KeyRef | None,
        unless_revoked: bool,
    ) -> PaymentIntent | None:
        params = {f"i_{name}": getattr(intent, name) for name in INSERTED_INTENT_COLUMNS}
        params.update(prefixed("event_", event_envelope(event)))
        for i, audit in enumerate(audits):
            params.update(prefixed(f"audit{i}_", audit_values(audit)))
        if bind is not None:
            params.update(key_params(bind))
        statement = insert_intent_statement(len(audits), bind is not None, unless_revoked)
        row = await self._direct.one(statement, params)
        return None if row is None else to_intent(row)

    async def change_intent(self, change: IntentChange) -> PaymentIntent | None:
        """Applies `change` in one statement; None if its condition no longer held."""
        after = change.after
        params: dict[str, Any] = {
            "w_id": change.intent.id,
            "w_statuses": [str(status) for status in change.statuses],
            **{f"v_{name}": value for name, value in change.values.items()},
        }
        if change.pending_key is not None:
            params["w_pending_key"] = change.pending_key
        if change.attempt_key is not None:
            params["w_attempt_key"] = change.attempt_key
        for i, (actor, action, result, details) in enumerate(change.audits):
            entry = AuditEntry.of_intent(after, actor, action, result, **details)
            params.update(prefixed(f"audit{i}_", audit_values(entry)))
        if change.event is not None:
            event = Event.of_intent(change.event, after)
            params.update(prefixed("event_", event_envelope(event)))
        if change.bind is not None:
            params.update(key_params(change.bind))
        if change.settles:
            params["s_merchant_id"] = change.intent.merchant_id
        statement = change_statement(
            tuple(change.values),
            pending_key=change.pending_key is not None,
            attempt_key=change.attempt_key is not None,
            no_pending=change.no_pending,
            audits=len(change.audits),
            event=change.event is not None,
            bind=change.bind is not None,
            settles=change.settles,
        )
        row = await self._direct.one(statement, params)
        return None if row is None else to_intent(row)

    async def audit(self, entry: AuditEntry) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(insert(payment_audit), [audit_values(entry)])

    async def complete_key(self, key: KeyRef, object_id: str) -> None:
        """The request's answer is its object, as it is whenever it is asked for again."""
        await self._direct.one(BIND_KEY, {**key_params(key.ended()), "k_object_id": object_id})

    # --- payment methods the vault revoked -----------------------------------------------

    async def revoke_payment_method(self, merchant: Merchant, payment_method: str) -> None:
        await self._direct.one(
            _REVOKE,
            {"r_pm": payment_method, "r_merchant": merchant.id, "r_livemode": merchant.livemode},
        )

    async def payment_method_revoked(self, payment_method: str) -> bool:
        return await self._direct.one(_REVOKED, {"r_pm": payment_method}) is not None


_REVOKE = (
    pg_insert(revoked_payment_methods)
    .values(
        payment_method=bindparam("r_pm"),
        merchant_id=bindparam("r_merchant"),
        livemode=bindparam("r_livemode"),
    )
    .on_conflict_do_nothing()
)
_REVOKED = select(revoked_payment_methods.c.payment_method).where(
    revoked_payment_methods.c.payment_method == bindparam("r_pm")
)
_PSP_ROUTE = select(merchants.c.psp_routing).where(merchants.c.id == bindparam("m_id"))


@functools.cache
def insert_intent_statement(audits: int, bind: bool, unless_revoked: bool):
    values = select(
        *[
            bindparam(f"i_{name}", type_=payment_intents.c[name].type).label(name)
            for name in INSERTED_INTENT_COLUMNS
        ]
    )
    if unless_revoked:
        revoked = revoked_payment_methods.c
        values = values.where(
            ~exists().where(revoked.payment_method == bindparam("i_payment_method"))
        )
    intent = (
        insert(payment_intents)
        .from_select(list(INSERTED_INTENT_COLUMNS), values)
        .returning(payment_intents)
        .cte("intent")
    )
    ctes = side_effects(intent, audits, event=True)
    if bind:
        ctes.append(
            update(idempotency_keys)
            .where(key_where(), exists(select(intent.c.id)))
            .values(object_id=select(intent.c.id).scalar_subquery(), state=bindparam("k_state"))
            .cte("bound")
        )
    return select(intent).add_cte(*ctes)


@functools.cache
def change_statement(
    columns: tuple[str, ...],
    *,
    pending_key: bool,
    attempt_key: bool,
    no_pending: bool,
    audits: int,
    event: bool,
    bind: bool,
    settles: bool,
):
    """IntentChange's conditional UPDATE (its condition is IntentChange.holds_for in SQL)
    with its side effects, as one statement."""
    intents = payment_intents.c
    conditions = [
        intents.id == bindparam("w_id"),
        # = ANY(array), not IN: an expanding IN would be rendered again on every call.
        intents.status == any_(bindparam("w_statuses", type_=ARRAY(String))),
    ]
    if pending_key:
        conditions.append(intents.pending_key == bindparam("w_pending_key"))
    if attempt_key:
        conditions.append(intents.attempt_key == bindparam("w_attempt_key"))
    if no_pending:
        conditions.append(intents.pending_operation.is_(None))
    values = {name: bindparam(f"v_{name}", type_=payment_intents.c[name].type) for name in columns}
    intent = (
        update(payment_intents)
        .where(*conditions)
        .values(**values, updated_at=func.now())
        .returning(payment_intents)
        .cte("intent")
    )
    ctes = side_effects(intent, audits, event)
    keys = idempotency_keys.c
    if bind:
        ctes.append(
            update(idempotency_keys)
            .where(key_where(), exists(select(intent.c.id)))
            .values(object_id=bindparam("w_id"), state=bindparam("k_state"))
            .cte("bound")
        )
    if settles:
        # Not the request's own key when it is bound here too (one statement may not update
        # the same row twice); a newer holder's, taken over from this request, is settled.
        mine = (
            [
                or_(
                    keys.key != bindparam("k_key"),
                    keys.locked_at != bindparam("k_locked_at", type_=keys.locked_at.type),
                )
            ]
            if bind
            else []
        )
        ctes.append(
            update(idempotency_keys)
            .where(
                keys.merchant_id == bindparam("s_merchant_id"),
                keys.object_id == bindparam("w_id"),
                keys.state == constant("running"),
                exists(select(intent.c.id)),
                *mine,
            )
            .values(state="done")
            .cte("settled")
        )
    return select(intent).add_cte(*ctes)
