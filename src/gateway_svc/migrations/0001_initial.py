"""payment_intents and the outbox

Revision ID: gateway_0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from paymesh.platform.migration_ops import create_outbox

revision = "gateway_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.create_table(
        "payment_intents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("capture_method", sa.String(16), nullable=False),
        sa.Column("amount_capturable", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("amount_received", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("amount_refunded", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("payment_method", sa.String(40)),
        sa.Column("psp", sa.String(20)),
        sa.Column("description", sa.Text),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("last_payment_error", JSONB),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("amount > 0", name="payment_intents_amount_positive"),
        schema=SCHEMA,
    )
    op.create_index(
        "payment_intents_merchant_created_idx",
        "payment_intents",
        ["merchant_id", "livemode", sa.text("created_at DESC"), sa.text("id DESC")],
        schema=SCHEMA,
    )
    create_outbox(SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("payment_intents", schema=SCHEMA)
