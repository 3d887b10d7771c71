"""rebill_workers: each rebill worker process beats its own row while it runs (and deletes it
on a clean stop), so that rebill_workers_alive counts idle workers too, and a frozen worker
stays visible in the heartbeat age after its jobs were reclaimed.

Revision ID: rebill_0007
Revises: rebill_0006
Create Date: 2026-12-11
"""

import sqlalchemy as sa
from alembic import op

revision = "rebill_0007"
down_revision = "rebill_0006"
branch_labels = None
depends_on = None

SCHEMA = "rebill"


def upgrade() -> None:
    op.create_table(
        "rebill_workers",
        sa.Column("owner", sa.String(80), primary_key=True),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "beat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("rebill_workers", schema=SCHEMA)
