"""payment_methods (masked card data) and the outbox

Revision ID: vault_0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from paymesh.platform.migration_ops import create_outbox

revision = "vault_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "vault"


def upgrade() -> None:
    op.create_table(
        "payment_methods",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("brand", sa.String(16), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("exp_month", sa.SmallInteger, nullable=False),
        sa.Column("exp_year", sa.SmallInteger, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    create_outbox(SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("payment_methods", schema=SCHEMA)
