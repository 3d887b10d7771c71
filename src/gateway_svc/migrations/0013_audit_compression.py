"""payment_audit: large details stored compressed (details_z), covered by the chain's digest

Revision ID: gateway_0013
Revises: gateway_0012
Create Date: 2026-12-07
"""

from paymesh.platform.migration_ops import compress_chained_audit, uncompress_chained_audit

revision = "gateway_0013"
down_revision = "gateway_0012"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    compress_chained_audit(SCHEMA, "payment_audit")


def downgrade() -> None:
    uncompress_chained_audit(SCHEMA, "payment_audit")
