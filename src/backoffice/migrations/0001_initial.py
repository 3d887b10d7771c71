"""operators, their sessions and the operator audit

Revision ID: backoffice_0001
Revises:
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from paymesh.platform.migration_ops import (
    compress_chained_audit,
    create_audit_checkpoints,
    create_chained_audit,
    split_chained_audit,
)

revision = "backoffice_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "backoffice"


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("email", sa.String(254), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("role IN ('finance', 'ops', 'admin')", name="operators_role_check"),
        schema=SCHEMA,
    )
    op.create_table(
        "sessions",
        # sha256 of the cookie's random id: a stolen table holds no usable session.
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column(
            "email",
            sa.String(254),
            sa.ForeignKey(f"{SCHEMA}.operators.email", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    # The kit's chained audit table, in the shape the services' reached (chains per
    # transaction, compressed large details), and its signed checkpoints.
    create_chained_audit(SCHEMA, "operator_audit")
    split_chained_audit(SCHEMA, "operator_audit")
    compress_chained_audit(SCHEMA, "operator_audit")
    create_audit_checkpoints(SCHEMA, "operator_audit")


def downgrade() -> None:
    op.drop_table("sessions", schema=SCHEMA)
    op.drop_table("operators", schema=SCHEMA)
