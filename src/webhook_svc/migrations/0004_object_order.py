"""events by object: the claim of a delivery looks up its object's earlier events (one
object's events go to an endpoint in sequence order)

Revision ID: webhook_0004
Revises: webhook_0003
Create Date: 2026-12-08
"""

from alembic import op

revision = "webhook_0004"
down_revision = "webhook_0003"
branch_labels = None
depends_on = None

SCHEMA = "webhook"


def upgrade() -> None:
    op.create_index(
        "events_object_idx", "events", ["object_id", "sequence", "created_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("events_object_idx", "events", schema=SCHEMA)
