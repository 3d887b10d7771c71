"""reconciliation: runs, the mismatches they found (each once: unique per psp, reference and
kind) and a run's working set of PSP references; indexes to page the ledger's settled records
of a period

Revision ID: gateway_0009
Revises: gateway_0008
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_0009"
down_revision = "gateway_0008"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("psp", sa.String(20), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(20), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("records_checked", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("new_mismatches", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name="reconciliation_runs_status"
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "reconciliation_runs_success_idx",
        "reconciliation_runs",
        ["psp", "finished_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'succeeded'"),
    )
    op.create_table(
        "reconciliation_mismatches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("psp", sa.String(20), nullable=False),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="open"),
        sa.Column("object_type", sa.String(16), nullable=False),
        sa.Column("payment_intent", sa.String(40)),
        sa.Column("merchant_id", sa.String(40)),
        sa.Column("psp_amount", sa.BigInteger, nullable=False),
        sa.Column("ledger_amount", sa.BigInteger, nullable=False),
        sa.Column("psp_currency", sa.String(3), nullable=False),
        sa.Column("ledger_currency", sa.String(3), nullable=False),
        sa.Column("psp_status", sa.String(32), nullable=False),
        sa.Column("ledger_status", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column(
            "found_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", sa.Text),
        sa.Column("note", sa.Text),
        sa.UniqueConstraint("psp", "reference", "kind", name="reconciliation_mismatches_once"),
        sa.CheckConstraint(
            "kind IN ('missing_in_ledger', 'missing_at_psp', 'amount_mismatch',"
            " 'currency_mismatch', 'status_mismatch')",
            name="reconciliation_mismatches_kind",
        ),
        sa.CheckConstraint(
            "state IN ('open', 'resolved', 'ignored')", name="reconciliation_mismatches_state"
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "reconciliation_mismatches_found_idx",
        "reconciliation_mismatches",
        ["found_at", "id"],
        schema=SCHEMA,
    )
    op.create_table(
        "reconciliation_psp_records",
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("reference", sa.Text, primary_key=True),
        schema=SCHEMA,
    )
    # The ledger's settled records of a period, paged by creation time.
    op.create_index(
        "payment_intents_settled_idx",
        "payment_intents",
        ["psp", "created_at", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'succeeded' AND psp_reference IS NOT NULL"),
    )
    op.create_index(
        "refunds_settled_idx",
        "refunds",
        ["created_at", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'succeeded' AND psp_reference IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("refunds_settled_idx", "refunds", schema=SCHEMA)
    op.drop_index("payment_intents_settled_idx", "payment_intents", schema=SCHEMA)
    op.drop_table("reconciliation_psp_records", schema=SCHEMA)
    op.drop_table("reconciliation_mismatches", schema=SCHEMA)
    op.drop_table("reconciliation_runs", schema=SCHEMA)
