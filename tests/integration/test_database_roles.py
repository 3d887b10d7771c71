"""Least-privilege database roles: each service connects as a role of its own that may read
and write its own schema's tables and nothing else. It cannot change the append-only audit
tables (UPDATE, DELETE and TRUNCATE are refused by privilege, before the tables' triggers are
even asked), cannot disable their triggers (it owns nothing), cannot switch triggers off for
its session (`session_replication_role` is for superusers), and cannot read another
service's schema. Each connection here is made with the URL the service's own settings read
from the environment a mesh gives it: no mesh is started, a migrated database is enough."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import structlog
from psycopg import errors, sql

from dev.devinfra import PG_ADMIN_URL
from paymesh.platform import migrations, roles
from paymesh.platform.db import create_engine
from paymesh.platform.server import warn_if_superuser
from paymesh_ops.services import ALL
from tests.support.mesh import base_env, migrated_database, service_database_url

pytestmark = pytest.mark.integration

SCHEMAS = {
    "gateway": "gateway",
    "vault": "vault",
    "rebill": "rebill",
    "webhook": "webhook",
    "backoffice": "backoffice",
}
# The append-only tables of each schema (test_the_audit_tables_are_every_append_only_table
# keeps this list whole).
AUDIT_TABLES = {
    "gateway": ["payment_audit", "payment_audit_checkpoints"],
    "vault": ["vault_audit"],
    "rebill": ["rebill_audit", "rebill_audit_checkpoints"],
    "webhook": ["webhook_audit", "webhook_audit_checkpoints"],
    "backoffice": ["operator_audit", "operator_audit_checkpoints"],
}
AUDITED = [(service, table) for service, tables in AUDIT_TABLES.items() for table in tables]
AUDIT_ROW = {
    "payment_audit": (
        "INSERT INTO gateway.payment_audit (merchant_id, actor, action, object_id, result,"
        " details) VALUES ('acct_roles', 'api', 'test', 'pi_roles', 'ok', '{}')"
    ),
    "rebill_audit": (
        "INSERT INTO rebill.rebill_audit (merchant_id, actor, action, object_id, result,"
        " details) VALUES ('acct_roles', 'scheduler', 'test', 'sub_roles', 'ok', '{}')"
    ),
    "webhook_audit": (
        "INSERT INTO webhook.webhook_audit (merchant_id, actor, action, object_id, result,"
        " details) VALUES ('acct_roles', 'operator', 'test', 'whd_1', 'ok', '{}')"
    ),
    "vault_audit": (
        "INSERT INTO vault.vault_audit (actor, action, payment_method, result, details)"
        " VALUES ('api', 'test', 'pm_roles', 'ok', '{}')"
    ),
    "operator_audit": (
        "INSERT INTO backoffice.operator_audit (merchant_id, actor, action, object_id, result,"
        " details) VALUES ('backoffice', 'operator', 'test', 'a@example.com', 'ok', '{}')"
    ),
    "operator_audit_checkpoints": (
        "INSERT INTO backoffice.operator_audit_checkpoints (merchant_id, chain, seq, row_id,"
        " hash, row_count, key_id, mac) VALUES ('backoffice', 0, 1, 1, '\\x00', 1, 'k', '\\x00')"
    ),
    "payment_audit_checkpoints": (
        "INSERT INTO gateway.payment_audit_checkpoints (merchant_id, chain, seq, row_id, hash,"
        " row_count, key_id, mac) VALUES ('acct_roles', 0, 1, 1, '\\x00', 1, 'k', '\\x00')"
    ),
    "rebill_audit_checkpoints": (
        "INSERT INTO rebill.rebill_audit_checkpoints (merchant_id, chain, seq, row_id, hash,"
        " row_count, key_id, mac) VALUES ('acct_roles', 0, 1, 1, '\\x00', 1, 'k', '\\x00')"
    ),
    "webhook_audit_checkpoints": (
        "INSERT INTO webhook.webhook_audit_checkpoints (merchant_id, chain, seq, row_id, hash,"
        " row_count, key_id, mac) VALUES ('acct_roles', 0, 1, 1, '\\x00', 1, 'k', '\\x00')"
    ),
}


@pytest.fixture(scope="module")
def database():
    with migrated_database("paymesh_roles") as infra:
        yield infra


def connect_as(database, service: str) -> psycopg.Connection:
    return psycopg.connect(service_database_url(base_env(database), service), autocommit=True)


def refused(db: psycopg.Connection, statement: str) -> str:
    """The message of the permission error `statement` fails with (undone if it succeeds)."""
    with (
        pytest.raises(errors.InsufficientPrivilege) as refusal,
        db.transaction(force_rollback=True),
    ):
        db.execute(statement)
    return str(refusal.value)


@pytest.mark.parametrize("service", SCHEMAS)
def test_each_service_connects_as_a_role_of_its_own_that_is_no_superuser(database, service):
    with connect_as(database, service) as db:
        user, superuser, bypass_rls = db.execute(
            "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        owned = db.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
            " WHERE r.rolname = current_user"
        ).fetchone()[0]
    assert user == f"paymesh_{service}"
    assert not superuser and not bypass_rls
    assert owned == 0


@pytest.mark.parametrize(("service", "table"), AUDITED)
def test_an_audit_table_refuses_update_delete_and_truncate_by_privilege(database, service, table):
    qualified = f"{SCHEMAS[service]}.{table}"
    with connect_as(database, service) as db:
        for statement in (
            f"UPDATE {qualified} SET id = id",
            f"DELETE FROM {qualified}",
            f"TRUNCATE {qualified}",
        ):
            # "permission denied", not the trigger's "append-only": the privilege holds even
            # where a trigger were disabled.
            assert "permission denied" in refused(db, statement), statement


@pytest.mark.parametrize(("service", "table"), AUDITED)
def test_an_audit_tables_triggers_cannot_be_disabled(database, service, table):
    qualified = f"{SCHEMAS[service]}.{table}"
    with connect_as(database, service) as db:
        assert "must be owner" in refused(db, f"ALTER TABLE {qualified} DISABLE TRIGGER ALL")
        assert "must be owner" in refused(db, f"ALTER TABLE {qualified} DISABLE TRIGGER USER")


@pytest.mark.parametrize("service", SCHEMAS)
def test_a_role_cannot_switch_triggers_off_for_its_session(database, service):
    with connect_as(database, service) as db:
        refused(db, "SET session_replication_role = replica")
        assert db.execute("SHOW session_replication_role").fetchone()[0] == "origin"


@pytest.mark.parametrize("service", SCHEMAS)
def test_another_services_schema_is_unreadable(database, service):
    with connect_as(database, service) as db:
        for other, schema in SCHEMAS.items():
            if other != service:
                refused(db, f"SELECT 1 FROM {schema}.outbox LIMIT 1")
                refused(db, f"INSERT INTO {schema}.outbox (event_id) VALUES ('x')")


@pytest.mark.parametrize("service", SCHEMAS)
def test_a_role_changes_no_schema(database, service):
    schema = SCHEMAS[service]
    table = "operators" if service == "backoffice" else "outbox"  # one of its own tables
    with connect_as(database, service) as db:
        refused(db, f"CREATE TABLE {schema}.sneaky (id int)")
        refused(db, f"DROP TABLE {schema}.{table}")
        refused(db, f"ALTER TABLE {schema}.{table} ADD COLUMN sneaky int")
        refused(db, f"UPDATE {schema}.alembic_version SET version_num = version_num")
        refused(db, "CREATE SCHEMA sneaky")
        refused(db, "CREATE TABLE public.sneaky (id int)")  # PostgreSQL 15's default


@pytest.mark.parametrize("service", SCHEMAS)
def test_a_role_does_its_services_normal_writes(database, service):
    schema = SCHEMAS[service]
    with connect_as(database, service) as db, db.transaction(force_rollback=True):
        if service == "backoffice":  # no outbox: operators and their sessions
            _operator_writes(db)
        else:
            _outbox_writes(db, schema)
        for table in AUDIT_TABLES[service]:
            db.execute(AUDIT_ROW[table])
            assert db.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()[0] >= 1


def _operator_writes(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO backoffice.operators (email, role, password_hash)"
        " VALUES ('roles@example.com', 'ops', 'x')"
    )
    db.execute(
        "INSERT INTO backoffice.sessions (digest, email, csrf_token, created_at, last_seen_at)"
        " VALUES ('d', 'roles@example.com', 't', now(), now())"
    )
    db.execute("UPDATE backoffice.sessions SET last_seen_at = now() WHERE digest = 'd'")
    db.execute("DELETE FROM backoffice.sessions WHERE digest = 'd'")
    db.execute("DELETE FROM backoffice.operators WHERE email = 'roles@example.com'")


def _outbox_writes(db: psycopg.Connection, schema: str) -> None:
    event = db.execute(
        sql.SQL(
            "INSERT INTO {}.outbox (event_id, event_type, aggregate_type, aggregate_id,"
            " payload) VALUES ('evt_roles', 'test', 'test', 'x', '{{}}') RETURNING id"
        ).format(sql.Identifier(schema))
    ).fetchone()[0]
    db.execute(
        sql.SQL("UPDATE {}.outbox SET published_at = now() WHERE id = %s").format(
            sql.Identifier(schema)
        ),
        (event,),
    )
    db.execute(
        sql.SQL("DELETE FROM {}.outbox WHERE id = %s").format(sql.Identifier(schema)),
        (event,),
    )


def test_the_audit_tables_are_every_append_only_table(database):
    with psycopg.connect(database.database_url) as db:
        append_only = db.execute(
            "SELECT n.nspname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.tgname LIKE '%append_only'"
        ).fetchall()
    assert sorted(append_only) == sorted((SCHEMAS[s], t) for s, t in AUDITED)


def test_granting_again_and_from_two_databases_at_once_is_harmless(database):
    """Roles are the cluster's, grants each database's: every test database's migration
    grants the same roles, at the same time, and dropping one database leaves the roles."""

    def grant(infra) -> list[str]:
        return [migrations.grant_runtime_role(infra.database_url, s, SCHEMAS[s]) for s in SCHEMAS]

    with migrated_database("paymesh_roles_other") as other, ThreadPoolExecutor(2) as pool:
        assert len(set(map(tuple, pool.map(grant, [database, other])))) == 1
    with connect_as(database, "gateway") as db:
        db.execute("SELECT count(*) FROM gateway.outbox")
        refused(db, "SELECT 1 FROM vault.outbox")
        refused(db, "DELETE FROM gateway.payment_audit")


def test_a_role_made_by_many_migrations_at_once_is_made_once():
    role = f"paymesh_roles_race_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        try:

            def ensure(_: int) -> None:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as db:
                    roles.ensure_role(db, role)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(ensure, range(4)))
            made = admin.execute(
                "SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = %s", (role,)
            ).fetchall()
            assert made == [(True, False)]
        finally:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_runtime_role_that_became_a_superuser_is_refused():
    role = f"paymesh_roles_unsafe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(role)))
        try:
            with pytest.raises(roles.UnsafeRole, match=role):
                roles.ensure_role(admin, role)
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(("user", "warned"), [("postgres", True), ("paymesh_gateway", False)])
def test_a_service_that_connects_as_a_superuser_says_so_at_start(database, user, warned):
    url = f"postgresql://{user}@127.0.0.1:5432/{database.name}"

    async def check() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            await warn_if_superuser(engine, ALL["gateway"].settings_class)
        finally:
            await engine.dispose()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(check())
    warnings = [e for e in logs if e["event"] == "database_role_is_superuser"]
    assert len(warnings) == int(warned), logs
    if warned:
        assert warnings[0]["role"] == "postgres"
        assert "GATEWAY_DATABASE_URL" in warnings[0]["hint"]
