"""rebill_svc's tables, all in the `rebill` schema (created by its migrations)."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from paymesh.platform.audit_chain import chained_audit_table
from paymesh.platform.outbox import outbox_table

SCHEMA = "rebill"
metadata = MetaData(schema=SCHEMA)


def _at(name: str, nullable: bool = True) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


def _now(name: str) -> Column:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


test_clocks = Table(
    "test_clocks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    _at("frozen_time", nullable=False),
    _now("created_at"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("payment_method", String(40), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("interval", String(10), nullable=False),
    Column("interval_count", Integer, nullable=False),
    _at("billing_cycle_anchor", nullable=False),
    _at("trial_end"),
    Column("test_clock", String(40), ForeignKey("test_clocks.id")),
    Column("metadata", JSONB, nullable=False),
    Column("status", String(16), nullable=False),
    Column("period_number", Integer, nullable=False),
    _at("current_period_start", nullable=False),
    _at("current_period_end", nullable=False),
    Column("cancel_at_period_end", Boolean, nullable=False, server_default="false"),
    _at("canceled_at"),
    _at("next_attempt_at"),
    Column("idempotency_key", String(255)),
    _now("created_at"),
    _now("updated_at"),
)

rebill_jobs = Table(
    "rebill_jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("subscription_id", String(40), ForeignKey("subscriptions.id"), nullable=False),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("test_clock", String(40)),
    Column("queue", String(40), nullable=False),
    Column("period_number", Integer, nullable=False),
    _at("period_start", nullable=False),
    _at("period_end", nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="1"),
    _at("due_at", nullable=False),
    _at("queued_at"),
    Column("lease_owner", String(80)),
    _at("lease_expires_at"),
    _at("heartbeat_at"),
    Column("runs", Integer, nullable=False, server_default="0"),
    _now("created_at"),
    _now("updated_at"),
)

rebill_attempts = Table(
    "rebill_attempts",
    metadata,
    Column("job_id", String(40), ForeignKey("rebill_jobs.id"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("subscription_id", String(40), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("decline_code", String(60), nullable=False, server_default=""),
    Column("payment_intent", String(40), nullable=False, server_default=""),
    _now("at"),
)

retry_policies = Table(
    "retry_policies",
    metadata,
    Column("merchant_id", String(40), primary_key=True),
    Column("retry_after_days", ARRAY(Integer), nullable=False),
    Column("final_status", String(16), nullable=False),
    _now("updated_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("queue", String(60), nullable=False),
    Column("job_id", String(40)),
    Column("reason", String(40), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False, server_default="dead"),
    _now("received_at"),
    _at("resolved_at"),
)

rebill_audit = chained_audit_table(metadata, "rebill_audit")

outbox = outbox_table(metadata, SCHEMA)
