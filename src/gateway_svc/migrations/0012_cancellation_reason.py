"""cancellation_reason: why a cancel said an intent was canceled, as Stripe takes it

Revision ID: gateway_0012
Revises: gateway_0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_0012"
down_revision = "gateway_0011"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.add_column("payment_intents", sa.Column("cancellation_reason", sa.Text), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("payment_intents", "cancellation_reason", schema=SCHEMA)
