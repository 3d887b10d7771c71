"""webhook_svc's tables, all in the `webhook` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from paymesh.platform.audit_chain import chained_audit_table
from paymesh.platform.columns import moment, set_now
from paymesh.platform.idempotency.table import idempotency_keys_table
from paymesh.platform.outbox import outbox_table

SCHEMA = "webhook"
metadata = MetaData(schema=SCHEMA)

idempotency_keys = idempotency_keys_table(metadata)


webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("url", Text, nullable=False),
    Column("enabled_events", ARRAY(Text), nullable=False),
    Column("status", String(16), nullable=False),
    set_now("created_at"),
    Column("description", Text),
    Column("signature_scheme", String(8), nullable=False),
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text),
    moment("previous_secret_expires_at"),
    Column("disabled_reason", String(40)),
    moment("failing_since"),
    set_now("updated_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("type", String(100), nullable=False),
    Column("object_type", String(60), nullable=False),
    Column("object_id", String(60), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("object", JSONB, nullable=False),
    moment("created_at", nullable=False),
    set_now("received_at"),
    Column("txid", BigInteger, nullable=False),
    Column("position", BigInteger, Identity(), nullable=False),
    # The W3C traceparent the event arrived with (its consumer span): deliveries continue it.
    Column("traceparent", Text),
    # The payment intent it is about: the object itself, or the one it names (a refund's, a
    # dispute's); computed by the database (webhook_0007).
    Column(
        "payment_intent",
        String(60),
        Computed(
            "CASE WHEN object_type = 'payment_intent' THEN object_id"
            " WHEN jsonb_typeof(object -> 'payment_intent') = 'string'"
            " THEN object ->> 'payment_intent' END",
            persisted=True,
        ),
    ),
    # The PSP's reference of the payment, as the gateway's event carries it beside the object
    # (never shown to merchants): a PSP webhook that only echoes a success is found by it.
    Column("psp_reference", Text),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("event_id", String(40), ForeignKey(events.c.id), nullable=False),
    Column("endpoint_id", String(40), ForeignKey(webhook_endpoints.c.id), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    set_now("next_attempt_at"),
    moment("leased_until"),
    Column("lease_token", String(40)),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    moment("delivered_at"),
    set_now("created_at"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("event_id", String(40), ForeignKey(events.c.id), nullable=False),
    Column("endpoint_id", String(40), nullable=False),
    Column("url", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    set_now("at"),
    Column("status_code", Integer),
    Column("duration_ms", Integer, nullable=False),
    Column("error", Text),
)

outbox = outbox_table(metadata, SCHEMA)

# Operators' actions on deliveries (WebhookAdminService), hash-chained like the other
# services' audit tables.
webhook_audit = chained_audit_table(metadata, "webhook_audit")

# Inbound PSP webhooks (webhook_svc.inbound): every PSP event once, by the PSP's event id,
# with how often it was delivered and what became of it (received, deferred, applied,
# already_applied, ignored).
psp_inbox = Table(
    "psp_inbox",
    metadata,
    Column("psp", String(20), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("event_type", String(100), nullable=False),
    moment("psp_created_at", nullable=False),
    set_now("received_at"),
    set_now("last_received_at"),
    Column("deliveries", Integer, nullable=False, server_default="1"),
    Column("status", String(20), nullable=False),
    Column("reason", String(60)),
    Column("payment_intent", String(40)),
    Column("payload", JSONB, nullable=False),
    moment("processed_at"),
)
