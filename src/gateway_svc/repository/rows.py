"""Rows as domain values, and domain values as the audit and outbox rows written with them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from sqlalchemy import Row

from gateway_svc.domain.models import AuditEntry, Dispute, Event, PaymentIntent, Refund
from paymesh.platform.audit_details import stored_details
from paymesh.platform.outbox import event_values as outbox_values
from paymesh.platform.outbox import snapshot

INTENT_FIELDS = tuple(PaymentIntent.__dataclass_fields__)
REFUND_FIELDS = tuple(Refund.__dataclass_fields__)
DISPUTE_FIELDS = tuple(Dispute.__dataclass_fields__)
EVENT_COLUMNS = ("event_id", "event_type", "aggregate_type", "aggregate_id", "payload", "headers")
AUDIT_COLUMNS = ("merchant_id", "actor", "action", "object_id", "result", "details", "details_z")


def _values(row: Row | Mapping[str, Any]) -> Mapping[str, Any]:
    return row._mapping if isinstance(row, Row) else row


def to_intent(row: Row | Mapping[str, Any]) -> PaymentIntent:
    values = _values(row)
    return PaymentIntent(**{name: values[name] for name in INTENT_FIELDS})


def to_refund(row: Row | Mapping[str, Any]) -> Refund:
    values = _values(row)
    return Refund(**{name: values[name] for name in REFUND_FIELDS})


def to_dispute(row: Row | Mapping[str, Any]) -> Dispute:
    values = _values(row)
    return Dispute(**{name: values[name] for name in DISPUTE_FIELDS})


def event_values(event: Event) -> dict[str, Any]:
    """The event's outbox row, its subject's row in it (see paymesh.platform.outbox)."""
    return {**event_envelope(event), "payload": snapshot(dataclasses.asdict(event.subject))}


def event_envelope(event: Event) -> dict[str, Any]:
    """The event's outbox row but its payload, which a statement takes from the row it
    writes (see statements.side_effects)."""
    values = outbox_values(
        event_type=event.type,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
        payload={},
    )
    del values["payload"]
    return values


def audit_values(entry: AuditEntry) -> dict[str, Any]:
    """A payment_audit row's columns; its details carry the trace of the request that wrote
    it (the current OpenTelemetry span's trace id), when there is one; large details are
    stored compressed (paymesh.platform.audit_details)."""
    values = {name: getattr(entry, name) for name in AUDIT_COLUMNS[:-2]}
    details = entry.details
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        details = {**details, "trace_id": format(span_context.trace_id, "032x")}
    values["details"], values["details_z"] = stored_details(details)
    return values
