"""revoked payment methods: the vault's detaches, checked on every charge, so the gateway may
keep cards' PSP references in memory

Revision ID: gateway_0005
Revises: gateway_0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_0005"
down_revision = "gateway_0004"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.create_table(
        "revoked_payment_methods",
        sa.Column("payment_method", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column(
            "revoked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("revoked_payment_methods", schema=SCHEMA)
