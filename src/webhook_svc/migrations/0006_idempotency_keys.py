"""idempotency_keys: the kit's key table (paymesh.platform.idempotency) for every keyed POST;
webhook_endpoints.idempotency_key goes. Its digests cannot be carried over (the kit's are
scoped by merchant under another key): a retry of a creation made before this revision runs
as a new one.

Revision ID: webhook_0006
Revises: webhook_0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from paymesh.platform.migration_ops import create_idempotency_keys

revision = "webhook_0006"
down_revision = "webhook_0005"
branch_labels = None
depends_on = None

SCHEMA = "webhook"


def upgrade() -> None:
    create_idempotency_keys(SCHEMA)
    op.drop_index("webhook_endpoints_idempotency_idx", "webhook_endpoints", schema=SCHEMA)
    op.drop_column("webhook_endpoints", "idempotency_key", schema=SCHEMA)


def downgrade() -> None:
    op.add_column("webhook_endpoints", sa.Column("idempotency_key", sa.String(255)), schema=SCHEMA)
    op.create_index(
        "webhook_endpoints_idempotency_idx",
        "webhook_endpoints",
        ["merchant_id", "livemode", "idempotency_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_table("idempotency_keys", schema=SCHEMA)
