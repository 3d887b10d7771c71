"""The back office: payments of every merchant searched newest first (by merchant, status, PSP,
amount or PSP reference), a payment's audit rows by object, disputes' evidence due dates

Revision ID: gateway_0014
Revises: gateway_0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_0014"
down_revision = "gateway_0013"
branch_labels = None
depends_on = None

SCHEMA = "gateway"

# Each search filter's index, in the search's order (newest first, then id).
NEWEST = [sa.text("created_at DESC"), sa.text("id DESC")]
SEARCH_INDEXES = {
    "payment_intents_created_idx": [],
    "payment_intents_any_mode_merchant_idx": ["merchant_id"],
    "payment_intents_status_created_idx": ["status"],
    "payment_intents_psp_created_idx": ["psp"],
    "payment_intents_amount_created_idx": ["amount"],
}


def upgrade() -> None:
    for name, columns in SEARCH_INDEXES.items():
        op.create_index(name, "payment_intents", [*columns, *NEWEST], schema=SCHEMA)
    # A PSP reference searched without its PSP.
    op.create_index(
        "payment_intents_reference_idx",
        "payment_intents",
        ["psp_reference"],
        schema=SCHEMA,
        postgresql_where=sa.text("psp_reference IS NOT NULL"),
    )
    # A payment's timeline: the audit rows of it, its refunds and disputes.
    op.create_index("payment_audit_object_idx", "payment_audit", ["object_id", "id"], schema=SCHEMA)
    op.add_column(
        "disputes", sa.Column("evidence_due_by", sa.DateTime(timezone=True)), schema=SCHEMA
    )
    op.create_index(
        "disputes_evidence_due_idx", "disputes", ["evidence_due_by", "id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("disputes_evidence_due_idx", "disputes", schema=SCHEMA)
    op.drop_column("disputes", "evidence_due_by", schema=SCHEMA)
    op.drop_index("payment_audit_object_idx", "payment_audit", schema=SCHEMA)
    op.drop_index("payment_intents_reference_idx", "payment_intents", schema=SCHEMA)
    for name in SEARCH_INDEXES:
        op.drop_index(name, "payment_intents", schema=SCHEMA)
