"""Events know the PSP's reference of the payment they are about (the gateway sends it beside
the object, never in it): the inbound side finds the success a PSP's capture webhook only
echoes by it, through a partial index of the successes.

Revision ID: webhook_0008
Revises: webhook_0007
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "webhook_0008"
down_revision = "webhook_0007"
branch_labels = None
depends_on = None

SCHEMA = "webhook"


def upgrade() -> None:
    op.add_column("events", sa.Column("psp_reference", sa.Text()), schema=SCHEMA)
    op.create_index(
        "events_succeeded_psp_reference_idx",
        "events",
        ["psp_reference"],
        schema=SCHEMA,
        postgresql_where=sa.text("type = 'payment_intent.succeeded' AND psp_reference IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("events_succeeded_psp_reference_idx", "events", schema=SCHEMA)
    op.drop_column("events", "psp_reference", schema=SCHEMA)
