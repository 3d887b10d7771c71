"""Subscriptions can be updated (a new card, amount or metadata).

rebill_jobs.payment_method: the card the job's current attempt charges, set when the attempt
first starts. A re-run of a started attempt (its worker died, or its outcome is unknown)
charges that card again under the attempt's key even if the subscription's card changed
since: the gateway refuses a key sent with another request, and the attempt's outcome would
never be learnt. NULL: the current attempt has not started (the subscription's card then).

subscription_update_keys: the Idempotency-Keys of updates, as keyed digests beside a digest
of the request they came with, and the subscription each one updated.

Revision ID: rebill_0008
Revises: rebill_0007
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

revision = "rebill_0008"
down_revision = "rebill_0007"
branch_labels = None
depends_on = None

SCHEMA = "rebill"


def upgrade() -> None:
    op.add_column("rebill_jobs", sa.Column("payment_method", sa.String(40)), schema=SCHEMA)
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


def downgrade() -> None:
    op.drop_table("subscription_update_keys", schema=SCHEMA)
    op.drop_column("rebill_jobs", "payment_method", schema=SCHEMA)
