"""customer action (3-D Secure): the requires_action status, the merchant's return URL and
the PSP's page the customer must visit

Revision ID: gateway_0011
Revises: gateway_0010
Create Date: 2026-12-14
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_0011"
down_revision = "gateway_0010"
branch_labels = None
depends_on = None

SCHEMA = "gateway"
_STATUSES = (
    "'requires_payment_method', 'requires_confirmation', 'processing', 'requires_capture',"
    " 'succeeded', 'canceled'"
)


def _status_known(statuses: str) -> None:
    op.drop_constraint("payment_intents_status_known", "payment_intents", schema=SCHEMA)
    op.create_check_constraint(
        "payment_intents_status_known",
        "payment_intents",
        f"status IN ({statuses})",
        schema=SCHEMA,
    )


def upgrade() -> None:
    op.add_column("payment_intents", sa.Column("return_url", sa.Text), schema=SCHEMA)
    op.add_column("payment_intents", sa.Column("next_action_url", sa.Text), schema=SCHEMA)
    _status_known(_STATUSES + ", 'requires_action'")


def downgrade() -> None:
    # Refused by the constraint while an intent still waits for its customer: cancel those first
    # (through the API, which voids them at their PSP).
    _status_known(_STATUSES)
    op.drop_column("payment_intents", "next_action_url", schema=SCHEMA)
    op.drop_column("payment_intents", "return_url", schema=SCHEMA)
