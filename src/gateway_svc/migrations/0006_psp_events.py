"""psp_events: the PSP events (from webhooks) that changed a payment, so that the same event,
or another event reporting the same refund or dispute, is applied once; and the lookups a
PSP event needs (an intent by its PSP reference, a refund by the PSP's)

Revision ID: gateway_0006
Revises: gateway_0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_0006"
down_revision = "gateway_0005"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.create_table(
        "psp_events",
        sa.Column("psp", sa.String(20), primary_key=True),
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        # capture | refund | dispute, and the PSP's id of what it reports (its refund or
        # dispute id): one dispute is recorded once whichever event reports it.
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("payment_intent", sa.String(40), nullable=False),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column(
            "applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "psp_events_reference_idx", "psp_events", ["psp", "kind", "reference"], schema=SCHEMA
    )
    op.create_index(
        "payment_intents_psp_reference_idx",
        "payment_intents",
        ["psp", "psp_reference"],
        schema=SCHEMA,
        postgresql_where=sa.text("psp_reference IS NOT NULL"),
    )
    op.create_index(
        "refunds_psp_reference_idx",
        "refunds",
        ["psp_reference"],
        schema=SCHEMA,
        postgresql_where=sa.text("psp_reference IS NOT NULL"),
    )
    op.create_index("refunds_payment_intent_idx", "refunds", ["payment_intent"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("refunds_payment_intent_idx", "refunds", schema=SCHEMA)
    op.drop_index("refunds_psp_reference_idx", "refunds", schema=SCHEMA)
    op.drop_index("payment_intents_psp_reference_idx", "payment_intents", schema=SCHEMA)
    op.drop_index("psp_events_reference_idx", "psp_events", schema=SCHEMA)
    op.drop_table("psp_events", schema=SCHEMA)
