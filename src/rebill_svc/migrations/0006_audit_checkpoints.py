"""rebill_audit_checkpoints: signed heads of rebill_audit's chains, so that a deleted tail or a
chain rewritten with the database's own digest function no longer verifies

Revision ID: rebill_0006
Revises: rebill_0005
Create Date: 2026-12-10
"""

from paymesh.platform.migration_ops import create_audit_checkpoints, drop_audit_checkpoints

revision = "rebill_0006"
down_revision = "rebill_0005"
branch_labels = None
depends_on = None

SCHEMA = "rebill"


def upgrade() -> None:
    create_audit_checkpoints(SCHEMA, "rebill_audit")


def downgrade() -> None:
    drop_audit_checkpoints(SCHEMA, "rebill_audit")
