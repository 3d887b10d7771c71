"""idempotency_keys: the kit's key table (paymesh.platform.idempotency) for every keyed POST;
the keys kept on subscriptions (idempotency_key, request_digest) and subscription_update_keys
go. The digests stored there cannot be carried over (the kit's digests are scoped by merchant
under another key): a retry of a request made before this revision runs as a new one.

Revision ID: rebill_0010
Revises: rebill_0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from paymesh.platform.migration_ops import create_idempotency_keys

revision = "rebill_0010"
down_revision = "rebill_0009"
branch_labels = None
depends_on = None

SCHEMA = "rebill"


def upgrade() -> None:
    create_idempotency_keys(SCHEMA)
    op.drop_table("subscription_update_keys", schema=SCHEMA)
    op.drop_index("subscriptions_idempotency_idx", "subscriptions", schema=SCHEMA)
    op.drop_column("subscriptions", "request_digest", schema=SCHEMA)
    op.drop_column("subscriptions", "idempotency_key", schema=SCHEMA)


def downgrade() -> None:
    op.add_column("subscriptions", sa.Column("idempotency_key", sa.String(255)), schema=SCHEMA)
    op.add_column("subscriptions", sa.Column("request_digest", sa.String(64)), schema=SCHEMA)
    op.create_index(
        "subscriptions_idempotency_idx",
        "subscriptions",
        ["merchant_id", "livemode", "idempotency_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "subscription_update_keys",
        sa.Column("merchant_id", sa.String(40), primary_key=True),
        sa.Column("livemode", sa.Boolean, primary_key=True),
        sa.Column("idempotency_key", sa.String(64), primary_key=True),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column(
            "subscription_id",
            sa.String(40),
            sa.ForeignKey(f"{SCHEMA}.subscriptions.id"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.drop_table("idempotency_keys", schema=SCHEMA)
