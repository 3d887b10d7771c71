"""rebill_audit: each merchant's rows in 32 chains (one per transaction, chosen by its id)
instead of one, so that renewals of one merchant no longer wait for each other's audit rows

Revision ID: rebill_0003
Revises: rebill_0002
Create Date: 2026-12-04
"""

from paymesh.platform.migration_ops import merge_chained_audit, split_chained_audit

revision = "rebill_0003"
down_revision = "rebill_0002"
branch_labels = None
depends_on = None

SCHEMA = "rebill"


def upgrade() -> None:
    split_chained_audit(SCHEMA, "rebill_audit")


def downgrade() -> None:
    merge_chained_audit(SCHEMA, "rebill_audit")
