"""payments: PSP routing per merchant, PSP attempts on intents, refunds, idempotency keys,
and the hash-chained, append-only payment_audit

Revision ID: gateway_0003
Revises: gateway_0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "gateway_0003"
down_revision = "gateway_0002"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.add_column(
        "merchants",
        sa.Column(
            "psp_routing",
            ARRAY(sa.Text),
            nullable=False,
            server_default=sa.text("ARRAY['sandbox', 'stripe']"),
        ),
        schema=SCHEMA,
    )
    for column in (
        sa.Column("psp_reference", sa.Text),
        sa.Column("attempt_key", sa.Text),
        sa.Column("processing_since", sa.DateTime(timezone=True)),
    ):
        op.add_column("payment_intents", column, schema=SCHEMA)
    op.create_check_constraint(
        "payment_intents_status_known",
        "payment_intents",
        "status IN ('requires_payment_method', 'requires_confirmation', 'processing',"
        " 'requires_capture', 'succeeded', 'canceled')",
        schema=SCHEMA,
    )
    op.create_check_constraint(
        "payment_intents_amounts_consistent",
        "payment_intents",
        "amount_received <= amount AND amount_refunded <= amount_received"
        " AND amount_capturable <= amount",
        schema=SCHEMA,
    )
    op.create_index(
        "payment_intents_processing_idx",
        "payment_intents",
        ["processing_since"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'processing'"),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column(
            "payment_intent",
            sa.String(40),
            sa.ForeignKey(f"{SCHEMA}.payment_intents.id"),
            nullable=False,
        ),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(40)),
        sa.Column("psp_reference", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("amount > 0", name="refunds_amount_positive"),
        schema=SCHEMA,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("merchant_id", sa.String(40), primary_key=True),
        sa.Column("livemode", sa.Boolean, primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),  # running | done
        sa.Column("response", sa.LargeBinary),  # a serialized google.rpc.Status or message
        sa.Column("is_error", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "locked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "payment_audit",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.String(20), nullable=False),  # api | worker | webhook | ops
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("object_id", sa.String(40), nullable=False),
        sa.Column("result", sa.String(40), nullable=False),
        sa.Column("details", JSONB, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "payment_audit_merchant_idx", "payment_audit", ["merchant_id", "id"], schema=SCHEMA
    )
    op.execute(
        f"""
        -- The canonical digest of an audit row, chained to the merchant's previous row.
        CREATE FUNCTION {SCHEMA}.payment_audit_digest(prev bytea, a {SCHEMA}.payment_audit)
        RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
          SELECT sha256(prev || convert_to(concat_ws('|', a.id, a.merchant_id,
            (extract(epoch FROM a.at) * 1000000)::bigint, a.actor, a.action, a.object_id,
            a.result, a.details::text), 'UTF8'))
        $$;

        -- Chains each new row to the merchant's previous one (serialized per merchant).
        CREATE FUNCTION {SCHEMA}.payment_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_advisory_xact_lock(hashtext('payment_audit:' || NEW.merchant_id));
          SELECT hash INTO NEW.prev_hash FROM {SCHEMA}.payment_audit
            WHERE merchant_id = NEW.merchant_id ORDER BY id DESC LIMIT 1;
          NEW.prev_hash := coalesce(NEW.prev_hash, '\\x'::bytea);
          NEW.hash := {SCHEMA}.payment_audit_digest(NEW.prev_hash, NEW);
          RETURN NEW;
        END $$;
        CREATE TRIGGER payment_audit_chain BEFORE INSERT ON {SCHEMA}.payment_audit
          FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.payment_audit_chain();

        CREATE FUNCTION {SCHEMA}.reject_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '%.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER payment_audit_append_only BEFORE UPDATE OR DELETE
          ON {SCHEMA}.payment_audit FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.reject_audit_change();
        CREATE TRIGGER payment_audit_no_truncate BEFORE TRUNCATE ON {SCHEMA}.payment_audit
          FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.reject_audit_change();
        """
    )


def downgrade() -> None:
    op.drop_table("payment_audit", schema=SCHEMA)
    op.execute(f"DROP FUNCTION {SCHEMA}.reject_audit_change()")
    op.execute(f"DROP FUNCTION {SCHEMA}.payment_audit_chain()")
    op.execute(f"DROP FUNCTION {SCHEMA}.payment_audit_digest(bytea, {SCHEMA}.payment_audit)")
    op.drop_table("idempotency_keys", schema=SCHEMA)
    op.drop_table("refunds", schema=SCHEMA)
    op.drop_index("payment_intents_processing_idx", "payment_intents", schema=SCHEMA)
    op.drop_constraint("payment_intents_amounts_consistent", "payment_intents", schema=SCHEMA)
    op.drop_constraint("payment_intents_status_known", "payment_intents", schema=SCHEMA)
    for column in ("processing_since", "attempt_key", "psp_reference"):
        op.drop_column("payment_intents", column, schema=SCHEMA)
    op.drop_column("merchants", "psp_routing", schema=SCHEMA)
