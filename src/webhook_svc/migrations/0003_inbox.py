"""psp_inbox: inbound PSP webhook events, one row per PSP event id (the dedupe), with how
often each was delivered and what became of it

Revision ID: webhook_0003
Revises: webhook_0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "webhook_0003"
down_revision = "webhook_0002"
branch_labels = None
depends_on = None

SCHEMA = "webhook"


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "psp_inbox",
        sa.Column("psp", sa.String(20), primary_key=True),
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("psp_created_at", sa.DateTime(timezone=True), nullable=False),
        _now("received_at"),
        _now("last_received_at"),
        sa.Column("deliveries", sa.Integer, nullable=False, server_default="1"),
        # received | deferred (to be sent again by the PSP) | applied | already_applied | ignored
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(60)),
        sa.Column("payment_intent", sa.String(40)),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_index(
        "psp_inbox_open_idx",
        "psp_inbox",
        ["received_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status IN ('received', 'deferred')"),
    )


def downgrade() -> None:
    op.drop_index("psp_inbox_open_idx", "psp_inbox", schema=SCHEMA)
    op.drop_table("psp_inbox", schema=SCHEMA)
