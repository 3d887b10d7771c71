"""gateway_svc's tables, all in the `gateway` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from paymesh.platform.audit_chain import chained_audit_table
from paymesh.platform.idempotency.table import idempotency_keys_table
from paymesh.platform.outbox import outbox_table

SCHEMA = "gateway"
metadata = MetaData(schema=SCHEMA)

payment_intents = Table(
    "payment_intents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(32), nullable=False),
    Column("capture_method", String(16), nullable=False),
    Column("amount_capturable", BigInteger, nullable=False, server_default=text("0")),
    Column("amount_received", BigInteger, nullable=False, server_default=text("0")),
    Column("amount_refunded", BigInteger, nullable=False, server_default=text("0")),
    Column("payment_method", String(40)),
    Column("psp", String(20)),
    Column("description", Text),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("last_payment_error", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The PSP's reference for the authorization, and the key of the last confirm.
    Column("psp_reference", Text),
    Column("attempt_key", Text),
    # A PSP operation that went out and whose outcome is not recorded yet (see Pending).
    Column("pending_operation", String(16)),
    Column("pending_key", Text),
    Column("pending_amount", BigInteger),
    Column("pending_since", DateTime(timezone=True)),
    # The merchant's return URL for the customer, and the PSP's page the customer must visit
    # while the intent requires_action (3-D Secure).
    Column("return_url", Text),
    Column("next_action_url", Text),
    Column("cancellation_reason", Text),  # as the merchant's cancel gave it
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("payment_intent", String(40), ForeignKey("gateway.payment_intents.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", String(40)),
    Column("psp_reference", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

idempotency_keys = idempotency_keys_table(metadata)

# Payment methods the vault detached (or is detaching): never charged again, whatever a cache
# of PSP references holds. Written by the vault's RevokePaymentMethod call before its detach.
revoked_payment_methods = Table(
    "revoked_payment_methods",
    metadata,
    Column("payment_method", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# PSP events (webhooks) that changed a payment, by the PSP's event id; `reference` is the PSP's
# id of what the event reports (its refund or dispute id), so one is recorded once.
psp_events = Table(
    "psp_events",
    metadata,
    Column("psp", String(20), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("reference", Text, nullable=False),
    Column("payment_intent", String(40), nullable=False),
    Column("merchant_id", String(40), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Chargebacks, one per PSP dispute (`psp`, `psp_reference`): needs_response, under_review, won,
# lost (gateway_svc.domain.disputes). Its opening withdrew `amount`; a won one gave it back.
disputes = Table(
    "disputes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("payment_intent", String(40), ForeignKey("gateway.payment_intents.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("psp", String(20), nullable=False),
    Column("psp_reference", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # When the merchant's evidence is due at the PSP, as its dispute events said.
    Column("evidence_due_by", DateTime(timezone=True)),
)

payment_audit = chained_audit_table(metadata, "payment_audit")

merchants = Table(
    "merchants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("psp_routing", ARRAY(Text), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), ForeignKey("gateway.merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("last4", String(4), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

outbox = outbox_table(metadata, SCHEMA)

# Reconciliation (gateway_svc.reconciliation): each run, each mismatch it found (once: one row
# per psp, reference and kind), and the PSP references a run has read so far (its working set,
# kept in the database rather than in memory, deleted when the run ends).
reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("psp", String(20), nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("actor", String(20), nullable=False),
    Column("status", String(16), nullable=False),  # running | succeeded | failed
    Column("records_checked", BigInteger, nullable=False, server_default=text("0")),
    Column("new_mismatches", BigInteger, nullable=False, server_default=text("0")),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
)

reconciliation_mismatches = Table(
    "reconciliation_mismatches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("psp", String(20), nullable=False),
    Column("reference", Text, nullable=False),
    Column("kind", String(24), nullable=False),
    Column("state", String(16), nullable=False, server_default=text("'open'")),
    Column("object_type", String(16), nullable=False),
    Column("payment_intent", String(40)),
    Column("merchant_id", String(40)),
    Column("psp_amount", BigInteger, nullable=False),
    Column("ledger_amount", BigInteger, nullable=False),
    Column("psp_currency", String(3), nullable=False),
    Column("ledger_currency", String(3), nullable=False),
    Column("psp_status", String(32), nullable=False),
    Column("ledger_status", String(32), nullable=False),
    Column("run_id", String(40), nullable=False),
    Column("found_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_by", Text),
    Column("note", Text),
)

reconciliation_psp_records = Table(
    "reconciliation_psp_records",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("reference", Text, primary_key=True),
)
