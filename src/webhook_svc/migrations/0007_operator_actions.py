"""The operators' side of merchant webhooks (WebhookAdminService): a dead delivery may be
`discarded`; events know the payment intent they are about (a generated column, indexed, so
that a payment's deliveries are found without reading every event's JSON); dead deliveries
are listed by a partial index; and webhook_audit, the kit's chained audit table (with its
signed checkpoints), records each operator action with the operator.

Revision ID: webhook_0007
Revises: webhook_0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from paymesh.platform.migration_ops import (
    compress_chained_audit,
    create_audit_checkpoints,
    create_chained_audit,
    drop_audit_checkpoints,
    drop_chained_audit,
    merge_chained_audit,
    split_chained_audit,
    uncompress_chained_audit,
)

revision = "webhook_0007"
down_revision = "webhook_0006"
branch_labels = None
depends_on = None

SCHEMA = "webhook"
# The payment intent an event is about: the object itself, or the one it names (a refund's,
# a dispute's).
PAYMENT_INTENT = """CASE WHEN object_type = 'payment_intent' THEN object_id
  WHEN jsonb_typeof(object -> 'payment_intent') = 'string' THEN object ->> 'payment_intent'
  END"""


def upgrade() -> None:
    op.drop_constraint("deliveries_status_known", "deliveries", schema=SCHEMA)
    op.create_check_constraint(
        "deliveries_status_known",
        "deliveries",
        "status IN ('pending', 'succeeded', 'dead', 'discarded')",
        schema=SCHEMA,
    )
    op.create_index(
        "deliveries_dead_idx",
        "deliveries",
        ["id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'dead'"),
    )
    op.add_column(
        "events",
        sa.Column("payment_intent", sa.String(60), sa.Computed(PAYMENT_INTENT, persisted=True)),
        schema=SCHEMA,
    )
    op.create_index(
        "events_payment_intent_idx",
        "events",
        ["payment_intent"],
        schema=SCHEMA,
        postgresql_where=sa.text("payment_intent IS NOT NULL"),
    )
    create_chained_audit(SCHEMA, "webhook_audit")
    split_chained_audit(SCHEMA, "webhook_audit")
    compress_chained_audit(SCHEMA, "webhook_audit")
    op.create_index("webhook_audit_object_idx", "webhook_audit", ["object_id"], schema=SCHEMA)
    create_audit_checkpoints(SCHEMA, "webhook_audit")


def downgrade() -> None:
    drop_audit_checkpoints(SCHEMA, "webhook_audit")
    op.drop_index("webhook_audit_object_idx", "webhook_audit", schema=SCHEMA)
    uncompress_chained_audit(SCHEMA, "webhook_audit")
    merge_chained_audit(SCHEMA, "webhook_audit")
    drop_chained_audit(SCHEMA, "webhook_audit")
    op.drop_index("events_payment_intent_idx", "events", schema=SCHEMA)
    op.drop_column("events", "payment_intent", schema=SCHEMA)
    op.drop_index("deliveries_dead_idx", "deliveries", schema=SCHEMA)
    op.execute(f"UPDATE {SCHEMA}.deliveries SET status = 'dead' WHERE status = 'discarded'")
    op.drop_constraint("deliveries_status_known", "deliveries", schema=SCHEMA)
    op.create_check_constraint(
        "deliveries_status_known",
        "deliveries",
        "status IN ('pending', 'succeeded', 'dead')",
        schema=SCHEMA,
    )
