"""rebill_jobs.status requires_action: the period's charge waits for the customer's
authentication (3-D Secure); settled like succeeded and failed (never retried, not open)

Revision ID: rebill_0008
Revises: rebill_0007
Create Date: 2026-12-14
"""

from alembic import op

revision = "rebill_0008"
down_revision = "rebill_0007"
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


def downgrade() -> None:
    # Refused by the constraint while a period still waits for its customer.
    _status_known(_STATUSES)
