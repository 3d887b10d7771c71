"""rebill_svc's tables, all in the `rebill` schema (created by its migrations)."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

from paymesh.platform.audit_chain import chained_audit_table
from paymesh.platform.columns import moment, set_now
from paymesh.platform.idempotency.table import idempotency_keys_table
from paymesh.platform.outbox import outbox_table

SCHEMA = "rebill"
metadata = MetaData(schema=SCHEMA)


test_clocks = Table(
    "test_clocks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    moment("frozen_time", nullable=False),
    set_now("created_at"),
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
    moment("billing_cycle_anchor", nullable=False),
    moment("trial_end"),
    Column("test_clock", String(40), ForeignKey("test_clocks.id")),
    Column("metadata", JSONB, nullable=False),
    Column("status", String(16), nullable=False),
    Column("period_number", Integer, nullable=False),
    moment("current_period_start", nullable=False),
    moment("current_period_end", nullable=False),
    Column("cancel_at_period_end", Boolean, nullable=False, server_default="false"),
    moment("canceled_at"),
    moment("next_attempt_at"),
    set_now("created_at"),
    set_now("updated_at"),
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
    moment("period_start", nullable=False),
    moment("period_end", nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="1"),
    moment("due_at", nullable=False),
    moment("queued_at"),
    Column("lease_owner", String(80)),
    moment("lease_expires_at"),
    moment("heartbeat_at"),
    Column("runs", Integer, nullable=False, server_default="0"),
    Column("attempt_runs", Integer, nullable=False, server_default="0"),  # starts of `attempt`
    # The card `attempt` charges, fixed at its first start (NULL: not started yet).
    Column("payment_method", String(40)),
    Column("payment_intent", String(40)),  # of the latest attempt
    set_now("created_at"),
    set_now("updated_at"),
)

# Each worker process's own row, beaten while it runs (rebill_svc.workforce).
rebill_workers = Table(
    "rebill_workers",
    metadata,
    Column("owner", String(80), primary_key=True),
    set_now("started_at"),
    set_now("beat_at"),
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
    set_now("at"),
)

retry_policies = Table(
    "retry_policies",
    metadata,
    Column("merchant_id", String(40), primary_key=True),
    Column("retry_after_days", ARRAY(Integer), nullable=False),
    Column("final_status", String(16), nullable=False),
    set_now("updated_at"),
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
    set_now("received_at"),
    moment("resolved_at"),
)

rebill_audit = chained_audit_table(metadata, "rebill_audit")

outbox = outbox_table(metadata, SCHEMA)
idempotency_keys = idempotency_keys_table(metadata)
