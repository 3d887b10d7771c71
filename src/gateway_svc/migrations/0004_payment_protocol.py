"""payment protocol: pending PSP operations on intents, idempotency keys bound to the object
they produced, and the audit chain ordered by a per-merchant sequence taken under its lock

Revision ID: gateway_0004
Revises: gateway_0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_0004"
down_revision = "gateway_0003"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    # An intent's PSP operation in flight (authorize, capture or void): its PSP idempotency
    # key, the amount it moves and since when. The recovery sweep settles what stays here.
    op.alter_column(
        "payment_intents", "processing_since", new_column_name="pending_since", schema=SCHEMA
    )
    op.add_column("payment_intents", sa.Column("pending_operation", sa.String(16)), schema=SCHEMA)
    op.add_column("payment_intents", sa.Column("pending_key", sa.Text), schema=SCHEMA)
    op.add_column("payment_intents", sa.Column("pending_amount", sa.BigInteger), schema=SCHEMA)
    op.drop_index("payment_intents_processing_idx", "payment_intents", schema=SCHEMA)
    op.execute(
        f"UPDATE {SCHEMA}.payment_intents SET pending_operation = 'authorize',"
        " pending_key = attempt_key WHERE status = 'processing'"
    )
    op.create_index(
        "payment_intents_pending_idx",
        "payment_intents",
        ["pending_since"],
        schema=SCHEMA,
        postgresql_where=sa.text("pending_operation IS NOT NULL"),
    )
    op.create_check_constraint(
        "payment_intents_pending_known",
        "payment_intents",
        "pending_operation IS NULL OR (pending_operation IN ('authorize', 'capture', 'void')"
        " AND pending_key IS NOT NULL AND pending_since IS NOT NULL)",
        schema=SCHEMA,
    )
    op.create_index(
        "refunds_pending_idx",
        "refunds",
        ["created_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )

    # The object (intent or refund) a key's request produced: a retry answers with it.
    op.add_column("idempotency_keys", sa.Column("object_id", sa.String(40)), schema=SCHEMA)
    op.create_index(
        "idempotency_keys_open_object_idx",
        "idempotency_keys",
        ["object_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'running' AND object_id IS NOT NULL"),
    )

    # The chain is ordered by a per-merchant sequence taken under the chain's lock (ids are
    # taken before it, so concurrent writers interleave them). Existing rows keep id order.
    op.add_column("payment_audit", sa.Column("seq", sa.BigInteger), schema=SCHEMA)
    op.execute(
        f"""
        ALTER TABLE {SCHEMA}.payment_audit DISABLE TRIGGER payment_audit_append_only;
        UPDATE {SCHEMA}.payment_audit a SET seq = n.seq FROM (
          SELECT id, row_number() OVER (PARTITION BY merchant_id ORDER BY id) AS seq
          FROM {SCHEMA}.payment_audit) n WHERE a.id = n.id;
        ALTER TABLE {SCHEMA}.payment_audit ENABLE TRIGGER payment_audit_append_only;

        CREATE OR REPLACE FUNCTION {SCHEMA}.payment_audit_chain()
        RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE last_seq bigint;
        BEGIN
          PERFORM pg_advisory_xact_lock(hashtext('payment_audit:' || NEW.merchant_id));
          SELECT seq, hash INTO last_seq, NEW.prev_hash FROM {SCHEMA}.payment_audit
            WHERE merchant_id = NEW.merchant_id ORDER BY seq DESC LIMIT 1;
          NEW.seq := coalesce(last_seq, 0) + 1;
          NEW.prev_hash := coalesce(NEW.prev_hash, '\\x'::bytea);
          NEW.hash := {SCHEMA}.payment_audit_digest(NEW.prev_hash, NEW);
          RETURN NEW;
        END $$;
        """
    )
    op.alter_column("payment_audit", "seq", nullable=False, schema=SCHEMA)
    op.drop_index("payment_audit_merchant_idx", "payment_audit", schema=SCHEMA)
    op.create_index(
        "payment_audit_merchant_seq_idx",
        "payment_audit",
        ["merchant_id", "seq"],
        unique=True,
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("payment_audit_merchant_seq_idx", "payment_audit", schema=SCHEMA)
    op.create_index(
        "payment_audit_merchant_idx", "payment_audit", ["merchant_id", "id"], schema=SCHEMA
    )
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION {SCHEMA}.payment_audit_chain()
        RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_advisory_xact_lock(hashtext('payment_audit:' || NEW.merchant_id));
          SELECT hash INTO NEW.prev_hash FROM {SCHEMA}.payment_audit
            WHERE merchant_id = NEW.merchant_id ORDER BY id DESC LIMIT 1;
          NEW.prev_hash := coalesce(NEW.prev_hash, '\\x'::bytea);
          NEW.hash := {SCHEMA}.payment_audit_digest(NEW.prev_hash, NEW);
          RETURN NEW;
        END $$;
        """
    )
    op.drop_column("payment_audit", "seq", schema=SCHEMA)
    op.drop_index("idempotency_keys_open_object_idx", "idempotency_keys", schema=SCHEMA)
    op.drop_column("idempotency_keys", "object_id", schema=SCHEMA)
    op.drop_index("refunds_pending_idx", "refunds", schema=SCHEMA)
    op.drop_constraint("payment_intents_pending_known", "payment_intents", schema=SCHEMA)
    op.drop_index("payment_intents_pending_idx", "payment_intents", schema=SCHEMA)
    for column in ("pending_amount", "pending_key", "pending_operation"):
        op.drop_column("payment_intents", column, schema=SCHEMA)
    op.alter_column(
        "payment_intents", "pending_since", new_column_name="processing_since", schema=SCHEMA
    )
    op.create_index(
        "payment_intents_processing_idx",
        "payment_intents",
        ["processing_since"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'processing'"),
    )
