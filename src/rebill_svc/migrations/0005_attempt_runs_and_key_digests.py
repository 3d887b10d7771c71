"""rebill_jobs.attempt_runs: how many times a worker has started the job's current attempt.
A second start is a re-run of an attempt that may have reached the PSP (its worker died before
recording the outcome), which is finished under its key even if the subscription ended since.

Subscriptions' idempotency keys are stored as keyed digests, beside a digest of the request
they came with (a key reused for another request is refused). Keys stored as sent before are
dropped: they cannot be digested here, without the service's secret.

Revision ID: rebill_0005
Revises: rebill_0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "rebill_0005"
down_revision = "rebill_0004"
branch_labels = None
depends_on = None

SCHEMA = "rebill"


def upgrade() -> None:
    op.add_column(
        "rebill_jobs",
        sa.Column("attempt_runs", sa.Integer, nullable=False, server_default="0"),
        schema=SCHEMA,
    )
    # Attempts that may have started already: held by a worker, or asked with no answer yet.
    op.execute(
        """
        UPDATE rebill.rebill_jobs j SET attempt_runs = 1
        WHERE j.status = 'running' OR EXISTS (
          SELECT 1 FROM rebill.rebill_attempts a
          WHERE a.job_id = j.id AND a.attempt = j.attempt AND a.outcome = 'unknown')
        """
    )
    op.add_column("subscriptions", sa.Column("request_digest", sa.String(64)), schema=SCHEMA)
    op.execute("UPDATE rebill.subscriptions SET idempotency_key = NULL")


def downgrade() -> None:
    op.drop_column("subscriptions", "request_digest", schema=SCHEMA)
    op.drop_column("rebill_jobs", "attempt_runs", schema=SCHEMA)
