"""The query builder the repository's modules share: reads by id, the audit rows and outbox
event that a one-statement write carries with it, and the idempotency keys it binds or settles.
Statements are built once per shape and cached: compiling them on every call cost more than
running them."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway_svc.domain.changes import KeyRef
from gateway_svc.domain.models import AuditEntry, Event
from gateway_svc.repository.rows import AUDIT_COLUMNS, EVENT_COLUMNS, audit_values, event_values
from gateway_svc.tables import idempotency_keys, outbox, payment_audit
from paymesh.platform.callers import Merchant, owned_by_params, owner_params
from paymesh.platform.db import constant
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.outbox import snapshot_column
from paymesh.platform.problems import NotFound


@functools.cache
def select_by_id(table):
    return select(table).where(table.c.id == bindparam("o_id"))


@functools.cache
def select_owned(table):
    return select(table).where(*owned_by_params(table, "o_"))


async def one(
    direct: DirectSql, table, object_id: str, merchant: Merchant | None
) -> dict[str, Any]:
    """The row of `table` with that id (the merchant's, in its mode, when given); NotFound
    otherwise."""
    if merchant is None:
        row = await direct.one(select_by_id(table), {"o_id": object_id})
    else:
        row = await direct.one(select_owned(table), owner_params("o_", object_id, merchant))
    if row is None:
        raise missing(table, object_id)
    return row


def missing(table, object_id: str) -> NotFound:
    noun = {"payment_intents": "payment_intent", "refunds": "refund"}[table.name]
    return NotFound(f"no such {noun}: {object_id!r}", reason="resource_missing")


def ago(seconds: float):
    """SQL for the moment `seconds` before the database's now()."""
    return func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{name}": value for name, value in values.items()}


async def record(connection: AsyncConnection, events: list[Event], audit: AuditEntry) -> None:
    """A change's outbox events and its audit row, in the change's transaction."""
    await connection.execute(insert(outbox), [event_values(event) for event in events])
    await connection.execute(insert(payment_audit), [audit_values(audit)])


# Every parameter name carries a prefix: an UPDATE in a statement would take a parameter named
# like one of its columns as a value to SET.
def typed(prefix: str, table, names):
    return [bindparam(f"{prefix}{name}", type_=table.c[name].type).label(name) for name in names]


def side_effects(target, audits: int, event: bool):
    """INSERTs of the event and the audit rows, each selecting FROM `target` (so they happen
    only if it wrote a row); the event carries `target`'s row as written; audit rows chained
    one after the other, so their order in the merchant's audit chain follows the actions'
    order."""
    ctes = []
    if event:
        envelope = [name for name in EVENT_COLUMNS if name != "payload"]
        ctes.append(
            insert(outbox)
            .from_select(
                [*envelope, "payload"],
                select(
                    *typed("event_", outbox, envelope), snapshot_column(target.name)
                ).select_from(target),
            )
            .cte("event")
        )
    previous = target
    for i in range(audits):
        previous = (
            insert(payment_audit)
            .from_select(
                list(AUDIT_COLUMNS),
                select(*typed(f"audit{i}_", payment_audit, AUDIT_COLUMNS)).select_from(previous),
            )
            .returning(payment_audit.c.id)
            .cte(f"audit{i}")
        )
        ctes.append(previous)
    return ctes


# --- idempotency keys --------------------------------------------------------------------


def key_params(bind: KeyRef) -> dict[str, Any]:
    return {
        "k_merchant_id": bind.merchant.id,
        "k_livemode": bind.merchant.livemode,
        "k_key": bind.key,
        "k_locked_at": bind.fence,
        "k_state": "done" if bind.done else "running",
    }


def key_where():
    """The request's key, while its claim still holds it: a request whose key was taken over
    (it looked dead) binds and settles nothing."""
    keys = idempotency_keys.c
    return and_(
        keys.merchant_id == bindparam("k_merchant_id"),
        keys.livemode == bindparam("k_livemode"),
        keys.key == bindparam("k_key"),
        keys.state == constant("running"),
        keys.locked_at == bindparam("k_locked_at", type_=keys.locked_at.type),
    )


BIND_KEY = (
    update(idempotency_keys)
    .where(key_where())
    .values(object_id=bindparam("k_object_id"), state=bindparam("k_state"))
)


def settle_keys(merchant_id: str, object_id: str):
    """Keys whose request died (or answered) before its object's outcome was known are
    done now: a retry answers with the object as it is."""
    keys = idempotency_keys.c
    return (
        update(idempotency_keys)
        .where(
            keys.merchant_id == merchant_id,
            keys.object_id == object_id,
            keys.state == constant("running"),
        )
        .values(state="done")
    )
