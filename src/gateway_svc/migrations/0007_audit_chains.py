"""payment_audit: each merchant's rows in 32 chains (one per transaction, chosen by its id)
instead of one, so that two payments of one merchant no longer wait for each other's audit rows

Revision ID: gateway_0007
Revises: gateway_0006
Create Date: 2026-12-04
"""

from paymesh.platform.migration_ops import merge_chained_audit, split_chained_audit

revision = "gateway_0007"
down_revision = "gateway_0006"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    split_chained_audit(SCHEMA, "payment_audit")


def downgrade() -> None:
    merge_chained_audit(SCHEMA, "payment_audit")
