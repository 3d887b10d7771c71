"""rebill_audit: large details stored compressed (details_z), covered by the chain's digest

Revision ID: rebill_0011
Revises: rebill_0010
Create Date: 2026-12-07
"""

from paymesh.platform.migration_ops import compress_chained_audit, uncompress_chained_audit

revision = "rebill_0011"
down_revision = "rebill_0010"
branch_labels = None
depends_on = None

SCHEMA = "rebill"


def upgrade() -> None:
    compress_chained_audit(SCHEMA, "rebill_audit")


def downgrade() -> None:
    uncompress_chained_audit(SCHEMA, "rebill_audit")
