"""subscriptions as merchants create them, test clocks, rebill jobs and attempts, retry
policies, dead letters and the hash-chained rebill_audit

Revision ID: rebill_0002
Revises: rebill_0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from paymesh.platform.migration_ops import create_chained_audit, drop_chained_audit

revision = "rebill_0002"
down_revision = "rebill_0001"
branch_labels = None
depends_on = None

SCHEMA = "rebill"
OPEN_JOB = "status IN ('queued', 'running', 'scheduled')"


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "test_clocks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        _at("frozen_time", nullable=False),
        _now("created_at"),
        sa.CheckConstraint("NOT livemode", name="test_clocks_test_mode_only"),
        schema=SCHEMA,
    )
    # No create API existed before this revision, so the table holds no rows to carry over.
    op.execute(f"DELETE FROM {SCHEMA}.subscriptions")
    op.drop_constraint("subscriptions_interval_known", "subscriptions", schema=SCHEMA)
    op.create_check_constraint(
        "subscriptions_interval_known",
        "subscriptions",
        "interval IN ('day', 'week', 'month', 'year')",
        schema=SCHEMA,
    )
    for column in (
        sa.Column("interval_count", sa.Integer, nullable=False, server_default="1"),
        _at("billing_cycle_anchor", nullable=False),
        _at("trial_end"),
        sa.Column("test_clock", sa.String(40), sa.ForeignKey(f"{SCHEMA}.test_clocks.id")),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        # The current period's number: 0 is the first billed period, -1 a trial before it.
        sa.Column("period_number", sa.Integer, nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean, nullable=False, server_default="false"),
        _at("canceled_at"),
        _at("next_attempt_at"),
        sa.Column("idempotency_key", sa.String(255)),
        _now("updated_at"),
    ):
        op.add_column("subscriptions", column, schema=SCHEMA)
    op.create_check_constraint(
        "subscriptions_status_known",
        "subscriptions",
        "status IN ('incomplete', 'trialing', 'active', 'past_due', 'unpaid', 'canceled',"
        " 'paused')",
        schema=SCHEMA,
    )
    # The scheduler's scan: renewable subscriptions in the order their periods end.
    op.create_index(
        "subscriptions_due_idx",
        "subscriptions",
        ["current_period_end", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status IN ('active', 'trialing')"),
    )
    op.create_index(
        "subscriptions_merchant_idx",
        "subscriptions",
        ["merchant_id", "livemode", "created_at", "id"],
        schema=SCHEMA,
    )
    op.create_index(
        "subscriptions_idempotency_idx",
        "subscriptions",
        ["merchant_id", "livemode", "idempotency_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )

    op.create_table(
        "rebill_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "subscription_id",
            sa.String(40),
            sa.ForeignKey(f"{SCHEMA}.subscriptions.id"),
            nullable=False,
        ),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("test_clock", sa.String(40)),
        sa.Column("queue", sa.String(40), nullable=False),
        sa.Column("period_number", sa.Integer, nullable=False),
        _at("period_start", nullable=False),
        _at("period_end", nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        # scheduled (waits for due_at) → queued (published) → running (leased by a worker)
        # → succeeded | failed; a declined attempt goes back to scheduled for the next one.
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
        _at("due_at", nullable=False),  # on the subscription's clock
        _at("queued_at"),
        sa.Column("lease_owner", sa.String(80)),
        _at("lease_expires_at"),
        _at("heartbeat_at"),
        sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
        _now("created_at"),
        _now("updated_at"),
        sa.UniqueConstraint("subscription_id", "period_start", name="rebill_jobs_one_per_period"),
        sa.CheckConstraint(
            "status IN ('scheduled', 'queued', 'running', 'succeeded', 'failed')",
            name="rebill_jobs_status_known",
        ),
        schema=SCHEMA,
    )
    # At most one unsettled period per subscription: periods are billed in order.
    op.create_index(
        "rebill_jobs_one_open_idx",
        "rebill_jobs",
        ["subscription_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text(OPEN_JOB),
    )
    op.create_index(
        "rebill_jobs_open_idx",
        "rebill_jobs",
        ["status", "due_at"],
        schema=SCHEMA,
        postgresql_where=sa.text(OPEN_JOB),
    )
    op.create_index(
        "rebill_jobs_clock_idx",
        "rebill_jobs",
        ["test_clock"],
        schema=SCHEMA,
        postgresql_where=sa.text(f"test_clock IS NOT NULL AND {OPEN_JOB}"),
    )

    op.create_table(
        "rebill_attempts",
        sa.Column(
            "job_id", sa.String(40), sa.ForeignKey(f"{SCHEMA}.rebill_jobs.id"), primary_key=True
        ),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("decline_code", sa.String(60), nullable=False, server_default=""),
        sa.Column("payment_intent", sa.String(40), nullable=False, server_default=""),
        _now("at"),
        schema=SCHEMA,
    )
    op.create_index(
        "rebill_attempts_subscription_idx",
        "rebill_attempts",
        ["subscription_id", "at"],
        schema=SCHEMA,
    )

    op.create_table(
        "retry_policies",
        sa.Column("merchant_id", sa.String(40), primary_key=True),
        sa.Column("retry_after_days", sa.ARRAY(sa.Integer), nullable=False),
        sa.Column("final_status", sa.String(16), nullable=False),
        _now("updated_at"),
        sa.CheckConstraint(
            "final_status IN ('unpaid', 'canceled')", name="retry_policies_final_status_known"
        ),
        schema=SCHEMA,
    )

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("queue", sa.String(60), nullable=False),
        sa.Column("job_id", sa.String(40)),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="dead"),
        _now("received_at"),
        _at("resolved_at"),
        sa.CheckConstraint(
            "status IN ('dead', 'retried', 'discarded')", name="dead_letters_status_known"
        ),
        schema=SCHEMA,
    )
    create_chained_audit(SCHEMA, "rebill_audit")


def downgrade() -> None:
    drop_chained_audit(SCHEMA, "rebill_audit")
    for table in ("dead_letters", "retry_policies", "rebill_attempts", "rebill_jobs"):
        op.drop_table(table, schema=SCHEMA)
    for index in (
        "subscriptions_idempotency_idx",
        "subscriptions_merchant_idx",
        "subscriptions_due_idx",
    ):
        op.drop_index(index, "subscriptions", schema=SCHEMA)
    op.execute(f"DELETE FROM {SCHEMA}.subscriptions")
    op.drop_constraint("subscriptions_status_known", "subscriptions", schema=SCHEMA)
    for column in (
        "updated_at",
        "idempotency_key",
        "next_attempt_at",
        "canceled_at",
        "cancel_at_period_end",
        "period_number",
        "metadata",
        "test_clock",
        "trial_end",
        "billing_cycle_anchor",
        "interval_count",
    ):
        op.drop_column("subscriptions", column, schema=SCHEMA)
    op.drop_constraint("subscriptions_interval_known", "subscriptions", schema=SCHEMA)
    op.create_check_constraint(
        "subscriptions_interval_known",
        "subscriptions",
        "interval IN ('daily', 'weekly', 'monthly', 'yearly')",
        schema=SCHEMA,
    )
    op.drop_table("test_clocks", schema=SCHEMA)
