"""webhook endpoints as merchants manage them (signing secrets, rolled secrets, failure
tracking), the events received from the mesh, one delivery per (event, endpoint) and every
delivery attempt

Revision ID: webhook_0002
Revises: webhook_0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "webhook_0002"
down_revision = "webhook_0001"
branch_labels = None
depends_on = None

SCHEMA = "webhook"


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    # No create API existed before this revision, so the table holds no rows to carry over.
    op.execute(f"DELETE FROM {SCHEMA}.webhook_endpoints")
    for column in (
        sa.Column("description", sa.Text),
        # `v1` (HMAC-SHA256, a `whsec_` secret) or `v1a` (Ed25519, a `whsk_` signing key).
        sa.Column("signature_scheme", sa.String(8), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        # After a roll the previous secret signs beside the new one until it expires.
        sa.Column("previous_secret", sa.Text),
        _at("previous_secret_expires_at"),
        sa.Column("disabled_reason", sa.String(40)),
        # Since when every attempt to this endpoint failed (NULL after any success).
        _at("failing_since"),
        sa.Column("idempotency_key", sa.String(255)),
        _now("updated_at"),
    ):
        op.add_column("webhook_endpoints", column, schema=SCHEMA)
    op.create_check_constraint(
        "webhook_endpoints_status_known",
        "webhook_endpoints",
        "status IN ('enabled', 'disabled')",
        schema=SCHEMA,
    )
    op.create_check_constraint(
        "webhook_endpoints_scheme_known",
        "webhook_endpoints",
        "signature_scheme IN ('v1', 'v1a')",
        schema=SCHEMA,
    )
    op.create_index(
        "webhook_endpoints_merchant_idx",
        "webhook_endpoints",
        ["merchant_id", "livemode", "created_at"],
        schema=SCHEMA,
    )
    op.create_index(
        "webhook_endpoints_idempotency_idx",
        "webhook_endpoints",
        ["merchant_id", "livemode", "idempotency_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )

    op.create_table(
        "events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("object_type", sa.String(60), nullable=False),
        sa.Column("object_id", sa.String(60), nullable=False),
        # The object's version: later changes of one object have larger numbers.
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("object", JSONB, nullable=False),
        _at("created_at", nullable=False),
        _now("received_at"),
        # The stream's order: the transaction that wrote the row, then the row.
        sa.Column(
            "txid",
            sa.BigInteger,
            nullable=False,
            server_default=sa.text("pg_current_xact_id()::text::bigint"),
        ),
        sa.Column("position", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
        schema=SCHEMA,
    )
    op.create_index(
        "events_merchant_created_idx",
        "events",
        ["merchant_id", "livemode", "created_at", "id"],
        schema=SCHEMA,
    )
    op.create_index("events_stream_idx", "events", ["txid", "position"], schema=SCHEMA)

    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "event_id",
            sa.String(40),
            sa.ForeignKey(f"{SCHEMA}.events.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "endpoint_id",
            sa.String(40),
            sa.ForeignKey(f"{SCHEMA}.webhook_endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        # pending (to send, now or at next_attempt_at), succeeded, dead (attempts exhausted,
        # or the endpoint answered 410 Gone).
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _now("next_attempt_at"),
        # While a replica sends it: nobody else takes it before this.
        _at("leased_until"),
        sa.Column("lease_token", sa.String(40)),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        _at("delivered_at"),
        _now("created_at"),
        sa.UniqueConstraint("event_id", "endpoint_id", name="deliveries_one_per_endpoint"),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'dead')", name="deliveries_status_known"
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "deliveries_due_idx",
        "deliveries",
        ["next_attempt_at", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("deliveries_endpoint_idx", "deliveries", ["endpoint_id"], schema=SCHEMA)

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "event_id",
            sa.String(40),
            sa.ForeignKey(f"{SCHEMA}.events.id", ondelete="CASCADE"),
            nullable=False,
        ),
        # No foreign key: the history outlives a deleted endpoint.
        sa.Column("endpoint_id", sa.String(40), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        _now("at"),
        sa.Column("status_code", sa.Integer),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        schema=SCHEMA,
    )
    op.create_index(
        "delivery_attempts_event_idx", "delivery_attempts", ["event_id", "at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("delivery_attempts", schema=SCHEMA)
    op.drop_table("deliveries", schema=SCHEMA)
    op.drop_table("events", schema=SCHEMA)
    op.drop_index("webhook_endpoints_idempotency_idx", "webhook_endpoints", schema=SCHEMA)
    op.drop_index("webhook_endpoints_merchant_idx", "webhook_endpoints", schema=SCHEMA)
    op.drop_constraint("webhook_endpoints_scheme_known", "webhook_endpoints", schema=SCHEMA)
    op.drop_constraint("webhook_endpoints_status_known", "webhook_endpoints", schema=SCHEMA)
    for column in (
        "updated_at",
        "idempotency_key",
        "failing_since",
        "disabled_reason",
        "previous_secret_expires_at",
        "previous_secret",
        "secret",
        "signature_scheme",
        "description",
    ):
        op.drop_column("webhook_endpoints", column, schema=SCHEMA)
