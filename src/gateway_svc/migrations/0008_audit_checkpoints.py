"""payment_audit_checkpoints: signed heads of payment_audit's chains, so that a deleted tail or
a chain rewritten with the database's own digest function no longer verifies

Revision ID: gateway_0008
Revises: gateway_0007
Create Date: 2026-12-10
"""

from paymesh.platform.migration_ops import create_audit_checkpoints, drop_audit_checkpoints

revision = "gateway_0008"
down_revision = "gateway_0007"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    create_audit_checkpoints(SCHEMA, "payment_audit")


def downgrade() -> None:
    drop_audit_checkpoints(SCHEMA, "payment_audit")
