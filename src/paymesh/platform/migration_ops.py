"""Migration steps several services share. Revisions call these, so never change what an
existing function creates: add a new function for a new shape.

An append-only table is one guarded by a trigger named `*_append_only`: `paymesh migrate`
grants the service's role only INSERT and SELECT on it (paymesh.platform.roles), so name the
trigger of any new append-only table so."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB


def create_outbox(schema: str) -> None:
    """The outbox table of paymesh.platform.outbox, version 1."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(40), nullable=False, unique=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("aggregate_type", sa.String(60), nullable=False),
        sa.Column("aggregate_id", sa.String(60), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        schema=schema,
    )
    op.create_index(
        "outbox_pending_idx",
        "outbox",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
    )


def create_chained_audit(schema: str, table: str) -> None:
    """An append-only audit table whose rows the database hash-chains per merchant, version 1:
    the shape gateway.payment_audit reached in gateway_0004 (a per-merchant `seq` taken under
    the chain's lock), checked by paymesh.platform.audit_chain."""
    op.create_table(
        table,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.String(20), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("object_id", sa.String(40), nullable=False),
        sa.Column("result", sa.String(40), nullable=False),
        sa.Column("details", JSONB, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        schema=schema,
    )
    op.create_index(
        f"{table}_merchant_seq_idx", table, ["merchant_id", "seq"], unique=True, schema=schema
    )
    op.execute(
        f"""
        CREATE FUNCTION {schema}.{table}_digest(prev bytea, a {schema}.{table})
        RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
          SELECT sha256(prev || convert_to(concat_ws('|', a.id, a.merchant_id,
            (extract(epoch FROM a.at) * 1000000)::bigint, a.actor, a.action, a.object_id,
            a.result, a.details::text), 'UTF8'))
        $$;

        {_one_chain_function("CREATE", schema, table)}
        CREATE TRIGGER {table}_chain BEFORE INSERT ON {schema}.{table}
          FOR EACH ROW EXECUTE FUNCTION {schema}.{table}_chain();

        CREATE FUNCTION {schema}.{table}_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '%.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {schema}.{table}
          FOR EACH ROW EXECUTE FUNCTION {schema}.{table}_reject_change();
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {schema}.{table}
          FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{table}_reject_change();
        """
    )


def _one_chain_function(verb: str, schema: str, table: str) -> str:
    """The chain trigger's function of version 1: one chain per merchant."""
    return f"""{verb} FUNCTION {schema}.{table}_chain() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE last_seq bigint;
        BEGIN
          PERFORM pg_advisory_xact_lock(hashtext('{table}:' || NEW.merchant_id));
          SELECT seq, hash INTO last_seq, NEW.prev_hash FROM {schema}.{table}
            WHERE merchant_id = NEW.merchant_id ORDER BY seq DESC LIMIT 1;
          NEW.seq := coalesce(last_seq, 0) + 1;
          NEW.prev_hash := coalesce(NEW.prev_hash, '\\x'::bytea);
          NEW.hash := {schema}.{table}_digest(NEW.prev_hash, NEW);
          RETURN NEW;
        END $$;"""


# Version 2 of a chained audit table: each merchant's rows form AUDIT_CHAINS chains instead of
# one. With one chain, every audit row of a busy merchant waited for the previous writer's
# commit. A row's chain is its transaction's id modulo AUDIT_CHAINS: all rows of a transaction
# go into one chain, so a transaction waits for one chain lock per merchant (never two in
# some order, which could deadlock), and transactions running at the same time have
# consecutive ids, so they fall into different chains. Rows written before keep chain 0,
# whose sequence new rows of chain 0 continue.
AUDIT_CHAINS = 32


def split_chained_audit(schema: str, table: str) -> None:
    op.add_column(
        table,
        sa.Column("chain", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        schema=schema,
    )
    op.drop_index(f"{table}_merchant_seq_idx", table, schema=schema)
    op.create_index(
        f"{table}_chain_seq_idx", table, ["merchant_id", "chain", "seq"], unique=True, schema=schema
    )
    op.execute(_chain_function_v2(schema, table, _digest("NEW.prev_hash", "NEW")))


def _digest(prev: str, row: str) -> str:
    """The expression of {table}_digest(prev, row), which the verifier calls, written out: a
    trigger that calls the SQL function pays for planning its body on every row (≈ 0.1 ms,
    a third of an audit row's insert); an expression of the trigger's own is planned once per
    session. A difference between the two would fail `paymesh audit verify` at once."""
    return (
        f"sha256({prev} || convert_to(concat_ws('|', {row}.id, {row}.merchant_id,"
        f" (extract(epoch FROM {row}.at) * 1000000)::bigint, {row}.actor, {row}.action,"
        f" {row}.object_id, {row}.result, {row}.details::text), 'UTF8'))"
    )


def _digest_v3(prev: str, row: str) -> str:
    """_digest with the compressed details (details_z) as stored: NULL adds nothing, so a row
    without them hashes as before."""
    return (
        f"sha256({prev} || convert_to(concat_ws('|', {row}.id, {row}.merchant_id,"
        f" (extract(epoch FROM {row}.at) * 1000000)::bigint, {row}.actor, {row}.action,"
        f" {row}.object_id, {row}.result, {row}.details::text), 'UTF8')"
        f" || coalesce({row}.details_z, '\\x'::bytea))"
    )


def _chain_function_v2(schema: str, table: str, digest: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION {schema}.{table}_chain() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE last_seq bigint;
        BEGIN
          NEW.chain := pg_current_xact_id()::text::bigint % {AUDIT_CHAINS};
          PERFORM pg_advisory_xact_lock(hashtext('{table}:' || NEW.merchant_id), NEW.chain);
          SELECT seq, hash INTO last_seq, NEW.prev_hash FROM {schema}.{table}
            WHERE merchant_id = NEW.merchant_id AND chain = NEW.chain ORDER BY seq DESC LIMIT 1;
          NEW.seq := coalesce(last_seq, 0) + 1;
          NEW.prev_hash := coalesce(NEW.prev_hash, '\\x'::bytea);
          NEW.hash := {digest};
          RETURN NEW;
        END $$;
        """


def compress_chained_audit(schema: str, table: str) -> None:
    """Version 3 of a chained audit table: large details stored compressed in `details_z`
    (paymesh.platform.audit_details), which the digest covers as stored. Rows written before
    have none and hash as they did."""
    op.add_column(table, sa.Column("details_z", sa.LargeBinary, nullable=True), schema=schema)
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION {schema}.{table}_digest(prev bytea, a {schema}.{table})
        RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
          SELECT {_digest_v3("prev", "a")}
        $$;
        {_chain_function_v2(schema, table, _digest_v3("NEW.prev_hash", "NEW"))}
        """
    )


def uncompress_chained_audit(schema: str, table: str) -> None:
    """compress_chained_audit's downgrade. Refused while any row holds compressed details:
    they cannot move back into `details` without re-hashing history."""
    op.execute(
        f"""
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM {schema}.{table} WHERE details_z IS NOT NULL) THEN
            RAISE EXCEPTION '{schema}.{table} has compressed details: '
              'they cannot be stored uncompressed without re-hashing them';
          END IF;
        END $$;
        {_chain_function_v2(schema, table, _digest("NEW.prev_hash", "NEW"))}
        """
    )
    # The digest function's row type loses a column: the function goes first.
    op.execute(f"DROP FUNCTION {schema}.{table}_digest(bytea, {schema}.{table})")
    op.drop_column(table, "details_z", schema=schema)
    op.execute(
        f"""
        CREATE FUNCTION {schema}.{table}_digest(prev bytea, a {schema}.{table})
        RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
          SELECT {_digest("prev", "a")}
        $$;
        """
    )


def merge_chained_audit(schema: str, table: str) -> None:
    """split_chained_audit's downgrade. Refused while any row is outside chain 0: such rows
    cannot join one chain without re-hashing history."""
    op.execute(
        f"""
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM {schema}.{table} WHERE chain <> 0) THEN
            RAISE EXCEPTION '{schema}.{table} has rows in chains other than 0: '
              'they cannot be merged into one chain without re-hashing them';
          END IF;
        END $$;
        {_one_chain_function("CREATE OR REPLACE", schema, table)}
        """
    )
    op.drop_index(f"{table}_chain_seq_idx", table, schema=schema)
    op.create_index(
        f"{table}_merchant_seq_idx", table, ["merchant_id", "seq"], unique=True, schema=schema
    )
    op.drop_column(table, "chain", schema=schema)


def drop_chained_audit(schema: str, table: str) -> None:
    op.drop_table(table, schema=schema)
    op.execute(f"DROP FUNCTION {schema}.{table}_reject_change()")
    op.execute(f"DROP FUNCTION {schema}.{table}_chain()")
    op.execute(f"DROP FUNCTION {schema}.{table}_digest(bytea, {schema}.{table})")


def create_audit_checkpoints(schema: str, table: str) -> None:
    """`{table}_checkpoints`, version 1: signed heads of a chained audit table's chains
    (paymesh.platform.audit_checkpoints), kept out of the audit table itself and append-only
    by trigger like it. The database only stores them: the MAC's key never reaches it."""
    checkpoints = f"{table}_checkpoints"
    op.create_table(
        checkpoints,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("chain", sa.SmallInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("row_id", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("key_id", sa.String(20), nullable=False),
        sa.Column("mac", sa.LargeBinary, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=schema,
    )
    op.create_index(
        f"{checkpoints}_chain_seq_idx", checkpoints, ["merchant_id", "chain", "seq"], schema=schema
    )
    op.execute(
        f"""
        CREATE FUNCTION {schema}.{checkpoints}_reject_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '%.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER {checkpoints}_append_only BEFORE UPDATE OR DELETE ON {schema}.{checkpoints}
          FOR EACH ROW EXECUTE FUNCTION {schema}.{checkpoints}_reject_change();
        CREATE TRIGGER {checkpoints}_no_truncate BEFORE TRUNCATE ON {schema}.{checkpoints}
          FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{checkpoints}_reject_change();
        """
    )


def drop_audit_checkpoints(schema: str, table: str) -> None:
    op.drop_table(f"{table}_checkpoints", schema=schema)
    op.execute(f"DROP FUNCTION {schema}.{table}_checkpoints_reject_change()")


def create_idempotency_keys(schema: str) -> None:
    """The key table of paymesh.platform.idempotency, version 1 (the shape gateway.idempotency_keys
    reached in gateway_0004 and vault.idempotency_keys has had from the start)."""
    op.create_table(
        "idempotency_keys",
        sa.Column("merchant_id", sa.String(40), primary_key=True),
        sa.Column("livemode", sa.Boolean, primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("response", sa.LargeBinary),
        sa.Column("is_error", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "locked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("object_id", sa.String(40)),
        schema=schema,
    )
