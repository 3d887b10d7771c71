"""idempotency keys of tokenize and detach: the request's state, its keyed fingerprint and
the payment method it made or detached (never card data, nor the caller's key in clear)

Revision ID: vault_0003
Revises: vault_0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "vault_0003"
down_revision = "vault_0002"
branch_labels = None
depends_on = None

SCHEMA = "vault"


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("merchant_id", sa.String(40), primary_key=True),
        sa.Column("livemode", sa.Boolean, primary_key=True),
        # HMAC-SHA256 of the caller's key: a key may be anything, a card number included.
        sa.Column("key", sa.String(255), primary_key=True),
        # HMAC-SHA256 of the method and the request under a key derived from the vault's
        # fingerprint secret: the request holds a card number and a CVC.
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),  # running | done
        sa.Column("response", sa.LargeBinary),  # the google.rpc.Status of a replayed error
        sa.Column("is_error", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("object_id", sa.String(40)),  # the payment method the request made/detached
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "locked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys", schema=SCHEMA)
