"""encrypted card data, KEK versions, wrapped secrets, PSP token cache, append-only audit

Revision ID: vault_0002
Revises: vault_0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "vault_0002"
down_revision = "vault_0001"
branch_labels = None
depends_on = None

SCHEMA = "vault"


def upgrade() -> None:
    for column in (
        sa.Column("kek_version", sa.Text),
        sa.Column("wrapped_key", sa.LargeBinary),
        sa.Column("nonce", sa.LargeBinary),
        sa.Column("ciphertext", sa.LargeBinary),
        sa.Column("billing_details", JSONB),
        sa.Column("detached_at", sa.DateTime(timezone=True)),
    ):
        op.add_column("payment_methods", column, schema=SCHEMA)
    op.create_index(
        "payment_methods_kek_version_idx",
        "payment_methods",
        ["kek_version"],
        schema=SCHEMA,
        postgresql_where=sa.text("wrapped_key IS NOT NULL"),
    )
    op.create_table(
        "kek_versions",
        sa.Column("version", sa.Text, primary_key=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("is_primary", sa.Boolean, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "kek_versions_one_primary",
        "kek_versions",
        ["is_primary"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("is_primary"),
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("kek_version", sa.Text, nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "psp_tokens",
        sa.Column("payment_method", sa.String(40), primary_key=True),
        sa.Column("psp", sa.String(20), primary_key=True),
        sa.Column("psp_reference", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "vault_audit",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("payment_method", sa.String(40)),
        sa.Column("merchant_id", sa.String(40)),
        sa.Column("reason", sa.Text),
        sa.Column("result", sa.String(20), nullable=False),
        sa.Column("details", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "vault_audit_payment_method_idx", "vault_audit", ["payment_method"], schema=SCHEMA
    )
    # The database itself keeps the audit trail append-only.
    op.execute(
        f"""
        CREATE FUNCTION {SCHEMA}.reject_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '%.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER vault_audit_append_only BEFORE UPDATE OR DELETE ON {SCHEMA}.vault_audit
          FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.reject_audit_change();
        CREATE TRIGGER vault_audit_no_truncate BEFORE TRUNCATE ON {SCHEMA}.vault_audit
          FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.reject_audit_change();
        """
    )


def downgrade() -> None:
    op.drop_table("vault_audit", schema=SCHEMA)
    op.execute(f"DROP FUNCTION {SCHEMA}.reject_audit_change()")
    op.drop_table("psp_tokens", schema=SCHEMA)
    op.drop_table("secrets", schema=SCHEMA)
    op.drop_table("kek_versions", schema=SCHEMA)
    op.drop_index("payment_methods_kek_version_idx", "payment_methods", schema=SCHEMA)
    for column in (
        "detached_at",
        "billing_details",
        "ciphertext",
        "nonce",
        "wrapped_key",
        "kek_version",
    ):
        op.drop_column("payment_methods", column, schema=SCHEMA)
