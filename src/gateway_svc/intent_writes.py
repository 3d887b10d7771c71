"""The payment hot path's writes as single statements: each writes an intent change together
with its outbox event, its audit row(s) and (when asked) its idempotent answer. One statement
is atomic on its own, costs one round trip, and holds the audit chain's per-merchant lock only
for itself. Built once and cached (compiling them on every call cost more than running them).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import bindparam, exists, func, insert, literal_column, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway_svc.tables import idempotency_keys, payment_audit, payment_intents
from gateway_svc.tables import outbox as outbox_table

_PAYLOAD_FIELDS = (
    "merchant_id",
    "livemode",
    "status",
    "amount",
    "amount_capturable",
    "amount_received",
    "amount_refunded",
    "currency",
    "psp",
    "last_payment_error",
)
_AMOUNT_DEFAULTS = {"amount_capturable": 0, "amount_received": 0, "amount_refunded": 0}


def intent_payload(intent: Row | dict[str, Any]) -> dict[str, Any]:
    """What events say of an intent (a row, or the values of one about to be inserted)."""
    values = intent if isinstance(intent, dict) else intent._mapping
    return {name: values.get(name, _AMOUNT_DEFAULTS.get(name)) for name in _PAYLOAD_FIELDS}


def audit_values(intent: dict[str, Any], actor: str, action: str, result: str) -> dict[str, Any]:
    return {
        "merchant_id": intent["merchant_id"],
        "actor": actor,
        "action": action,
        "object_id": intent["id"],
        "result": result,
        "details": {"status": intent["status"], "amount": intent["amount"]},
    }


_INTENT_COLUMNS = (
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
    "processing_since",
)
_EVENT_COLUMNS = ("event_id", "event_type", "aggregate_type", "aggregate_id", "payload", "headers")
_AUDIT_COLUMNS = ("merchant_id", "actor", "action", "object_id", "result", "details")


@functools.cache
def _insert_intent_statement(audit_rows: int):
    """The intent, its event and its audit rows in ONE statement: atomic on its own, one
    round trip, and the audit chain's per-merchant lock held for that statement only."""
    intent = (
        insert(payment_intents)
        .values({name: bindparam(name) for name in _INTENT_COLUMNS})
        .returning(payment_intents)
        .cte("intent")
    )
    event = (
        insert(outbox_table)
        .values(id=literal_column("DEFAULT"))
        .values({name: bindparam(f"event_{name}") for name in _EVENT_COLUMNS})
        .cte("event")
    )
    # One single-row INSERT per audit row, each selecting FROM the one before: that orders
    # them (ids and chain follow the actions' order), and unlike a multi-row VALUES it stays
    # cacheable (not compiled on every call). Serial ids inside a CTE are left to the database.
    audits = [
        insert(payment_audit)
        .values(id=literal_column("DEFAULT"))
        .values({name: bindparam(f"audit0_{name}") for name in _AUDIT_COLUMNS})
        .returning(payment_audit.c.id)
        .cte("audit0")
    ]
    for i in range(1, audit_rows):
        audits.append(
            insert(payment_audit)
            .from_select(
                list(_AUDIT_COLUMNS),
                select(
                    *(
                        bindparam(f"audit{i}_{name}", type_=payment_audit.c[name].type).label(name)
                        for name in _AUDIT_COLUMNS
                    )
                ).select_from(audits[-1]),
            )
            .returning(payment_audit.c.id)
            .cte(f"audit{i}")
        )
    return select(intent).add_cte(event, *audits)


def prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{name}": value for name, value in values.items()}


@functools.cache
def finish_statement(with_claim: bool):
    """A confirm's outcome, its event, its audit row (and its idempotent answer) in ONE
    statement. The inserts select FROM the update, so they happen only if the intent was
    still this attempt's (the recovery sweep may have settled it meanwhile)."""
    intents = payment_intents
    intent = (
        update(intents)
        .where(
            intents.c.id == bindparam("w_id"),
            intents.c.status == "processing",
            intents.c.attempt_key == bindparam("w_attempt_key"),
        )
        .values(
            status=bindparam("status"),
            amount_capturable=bindparam("amount_capturable"),
            amount_received=bindparam("amount_received"),
            last_payment_error=bindparam(
                "last_payment_error", type_=intents.c.last_payment_error.type
            ),
            psp=func.coalesce(bindparam("psp", type_=intents.c.psp.type), intents.c.psp),
            psp_reference=func.coalesce(
                bindparam("psp_reference", type_=intents.c.psp_reference.type),
                intents.c.psp_reference,
            ),
            processing_since=None,
            updated_at=func.now(),
        )
        .returning(intents)
        .cte("intent")
    )

    def typed(prefix: str, table, names):
        return [
            bindparam(f"{prefix}{name}", type_=table.c[name].type).label(name) for name in names
        ]

    event = (
        insert(outbox_table)
        .from_select(
            list(_EVENT_COLUMNS),
            select(*typed("event_", outbox_table, _EVENT_COLUMNS)).select_from(intent),
        )
        .cte("event")
    )
    audit = (
        insert(payment_audit)
        .from_select(
            list(_AUDIT_COLUMNS),
            select(*typed("audit_", payment_audit, _AUDIT_COLUMNS)).select_from(intent),
        )
        .cte("audit")
    )
    ctes = [event, audit]
    if with_claim:
        keys = idempotency_keys.c
        ctes.append(
            update(idempotency_keys)
            .where(
                keys.merchant_id == bindparam("c_merchant_id"),
                keys.livemode == bindparam("c_livemode"),
                keys.key == bindparam("c_key"),
                exists(select(intent.c.id)),
            )
            .values(state="done", response=bindparam("c_response"), is_error=False)
            .cte("claimed")
        )
    return select(intent).add_cte(*ctes)


async def insert_intent(
    connection: AsyncConnection,
    values: dict[str, Any],
    event: dict[str, Any],
    audits: list[dict[str, Any]],
) -> Row:
    params = {name: values.get(name) for name in _INTENT_COLUMNS}
    params.update({f"event_{name}": event[name] for name in _EVENT_COLUMNS})
    for i, audit in enumerate(audits):
        params.update({f"audit{i}_{name}": audit[name] for name in _AUDIT_COLUMNS})
    return (await connection.execute(_insert_intent_statement(len(audits)), params)).one()
