"""rebill_jobs.status requires_action: the period's charge waits for the customer's
authentication (3-D Secure); settled like succeeded and failed (never retried, not open).
rebill_jobs.payment_intent: the payment intent of the job's latest attempt (where a merchant
takes the customer back to authenticate; GET /v1/renewals/{id} shows it).

Revision ID: rebill_0009
Revises: rebill_0008
Create Date: 2026-12-14
"""

import sqlalchemy as sa
from alembic import op

revision = "rebill_0009"
down_revision = "rebill_0008"
branch_labels = None
depends_on = None

SCHEMA = "rebill"
_STATUSES = "'scheduled', 'queued', 'running', 'succeeded', 'failed'"


def _status_known(statuses: str) -> None:
    op.drop_constraint("rebill_jobs_status_known", "rebill_jobs", schema=SCHEMA)
    op.create_check_constraint(
        "rebill_jobs_status_known", "rebill_jobs", f"status IN ({statuses})", schema=SCHEMA
    )


def upgrade() -> None:
    _status_known(_STATUSES + ", 'requires_action'")
    op.add_column("rebill_jobs", sa.Column("payment_intent", sa.String(40)), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("rebill_jobs", "payment_intent", schema=SCHEMA)
    # Refused by the constraint while a period still waits for its customer.
    _status_known(_STATUSES)
