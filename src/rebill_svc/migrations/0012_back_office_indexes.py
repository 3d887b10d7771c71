"""Indexes for the back office's reads across merchants (RebillAdminService): subscriptions
newest first, by merchant, by status and by payment method; a subscription's rebill_audit rows
by object; and each period's first attempt by time, for the recovery stats.

Revision ID: rebill_0012
Revises: rebill_0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "rebill_0012"
down_revision = "rebill_0011"
branch_labels = None
depends_on = None

SCHEMA = "rebill"
INDEXES = (
    ("subscriptions_created_idx", "subscriptions", ["created_at", "id"], None),
    (
        "subscriptions_merchant_created_idx",
        "subscriptions",
        ["merchant_id", "created_at", "id"],
        None,
    ),
    ("subscriptions_status_created_idx", "subscriptions", ["status", "created_at", "id"], None),
    ("subscriptions_payment_method_idx", "subscriptions", ["payment_method"], None),
    ("rebill_audit_object_idx", "rebill_audit", ["object_id", "id"], None),
    ("rebill_attempts_first_at_idx", "rebill_attempts", ["at"], "attempt = 1"),
)


def upgrade() -> None:
    for name, table, columns, where in INDEXES:
        op.create_index(
            name,
            table,
            columns,
            schema=SCHEMA,
            postgresql_where=sa.text(where) if where else None,
        )


def downgrade() -> None:
    for name, table, _columns, _where in reversed(INDEXES):
        op.drop_index(name, table, schema=SCHEMA)
