"""disputes: one row per PSP dispute (chargeback) of a payment, unique per PSP and the PSP's
dispute id; indexes to page a merchant's disputes and the ledger's disputes of a period

Revision ID: gateway_0010
Revises: gateway_0009
Create Date: 2026-12-14
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_0010"
down_revision = "gateway_0009"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.create_table(
        "disputes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column(
            "payment_intent",
            sa.String(40),
            sa.ForeignKey(f"{SCHEMA}.payment_intents.id"),
            nullable=False,
        ),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("psp", sa.String(20), nullable=False),
        sa.Column("psp_reference", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("amount > 0", name="disputes_amount_positive"),
        sa.CheckConstraint(
            "status IN ('needs_response', 'under_review', 'won', 'lost')",
            name="disputes_status_known",
        ),
        sa.UniqueConstraint("psp", "psp_reference", name="disputes_one_per_psp_dispute"),
        schema=SCHEMA,
    )
    op.create_index(
        "disputes_merchant_created_idx",
        "disputes",
        ["merchant_id", "livemode", sa.text("created_at DESC"), sa.text("id DESC")],
        schema=SCHEMA,
    )
    op.create_index("disputes_payment_intent_idx", "disputes", ["payment_intent"], schema=SCHEMA)
    # The ledger's disputes of a period, paged by creation time (reconciliation).
    op.create_index(
        "disputes_psp_created_idx", "disputes", ["psp", "created_at", "id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("disputes", schema=SCHEMA)
