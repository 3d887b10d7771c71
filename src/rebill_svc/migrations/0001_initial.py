"""subscriptions and the outbox

Revision ID: rebill_0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from paymesh.platform.migration_ops import create_outbox

revision = "rebill_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "rebill"


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("payment_method", sa.String(40), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("interval", sa.String(10), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("amount > 0", name="subscriptions_amount_positive"),
        sa.CheckConstraint(
            "interval IN ('daily', 'weekly', 'monthly', 'yearly')",
            name="subscriptions_interval_known",
        ),
        schema=SCHEMA,
    )
    create_outbox(SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("subscriptions", schema=SCHEMA)
