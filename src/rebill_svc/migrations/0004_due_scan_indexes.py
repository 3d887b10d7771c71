"""The scheduler's due scan reads ranges of two indexes instead of every renewable
subscription: real-time subscriptions by merchant and period end (a skip scan over
merchants, then each one's due range), test-clock subscriptions by clock and period end

Revision ID: rebill_0004
Revises: rebill_0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "rebill_0004"
down_revision = "rebill_0003"
branch_labels = None
depends_on = None

SCHEMA = "rebill"
RENEWABLE = "status IN ('active', 'trialing')"


def upgrade() -> None:
    op.create_index(
        "subscriptions_due_by_merchant_idx",
        "subscriptions",
        ["merchant_id", "current_period_end", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text(f"{RENEWABLE} AND test_clock IS NULL"),
    )
    op.create_index(
        "subscriptions_due_by_clock_idx",
        "subscriptions",
        ["test_clock", "current_period_end", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text(f"{RENEWABLE} AND test_clock IS NOT NULL"),
    )
    op.drop_index("subscriptions_due_idx", "subscriptions", schema=SCHEMA)


def downgrade() -> None:
    op.create_index(
        "subscriptions_due_idx",
        "subscriptions",
        ["current_period_end", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text(RENEWABLE),
    )
    op.drop_index("subscriptions_due_by_clock_idx", "subscriptions", schema=SCHEMA)
    op.drop_index("subscriptions_due_by_merchant_idx", "subscriptions", schema=SCHEMA)
