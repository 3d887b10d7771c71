"""events keep the trace context they arrived in: a merchant delivery continues the trace of
the change that made the event, and a PSP webhook about a payment links to it

Revision ID: webhook_0005
Revises: webhook_0004
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "webhook_0005"
down_revision = "webhook_0004"
branch_labels = None
depends_on = None

SCHEMA = "webhook"


def upgrade() -> None:
    op.add_column("events", sa.Column("traceparent", sa.Text()), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("events", "traceparent", schema=SCHEMA)
