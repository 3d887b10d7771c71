"""Least-privilege database roles: every service connects as a LOGIN role of its own,
`paymesh_<service>`, which may read and write its own schema's tables and nothing else.

`paymesh migrate` runs as the migrating role (`DATABASE_URL`: a superuser, or a role with
CREATEROLE), which owns every schema, table and function it creates. After each service's
migrations it calls `grant_runtime_role`, so the runtime roles

- own nothing: they cannot ALTER, DROP or disable a trigger (only an owner can);
- may SELECT, INSERT, UPDATE and DELETE their schema's ordinary tables and use its sequences;
- may only INSERT and SELECT an append-only table (one with a trigger named
  `*_append_only`: the audit tables and their checkpoints), by privilege, so UPDATE, DELETE
  and TRUNCATE are refused before any trigger is asked;
- may only read their schema's Alembic version table;
- are no superusers, so `SET session_replication_role = replica` (which would silence every
  trigger of the session) is refused;
- have no USAGE on another service's schema: no service reads another's tables.

Roles are cluster-wide while the grants live in each database: creating a role is idempotent
and safe against another database's migration creating it at the same moment, and nothing here
ever drops a role (other databases of the cluster may be using it). Default privileges keep
tables that a later migration creates granted the same way; every `paymesh migrate` grants
again, which also takes UPDATE and DELETE back from a new append-only table."""

from __future__ import annotations

import contextlib

import psycopg
from psycopg import errors, sql

ROLE_PREFIX = "paymesh_"
APPEND_ONLY_TRIGGER = "%\\_append\\_only"
VERSION_TABLE = "alembic_version"

_APPEND_ONLY_TABLES = """
SELECT DISTINCT c.relname FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND t.tgname LIKE %s AND NOT t.tgisinternal
ORDER BY c.relname
"""


class UnsafeRole(Exception):
    """A runtime role exists with powers it must not have."""


def role_of(service: str) -> str:
    """The LOGIN role `service` connects as."""
    return f"{ROLE_PREFIX}{service}"


def ensure_role(connection: psycopg.Connection, role: str) -> None:
    """Creates `role` (LOGIN, no superuser, no CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS)
    unless it exists; refuses one that exists with any of those powers. `connection` is in
    autocommit. Passwords are not set here: in production the DBA sets the role's password
    (ALTER ROLE … PASSWORD) and the service's URL carries it."""
    if not _role_exists(connection, role):
        # Another database's migration may make it at the same moment.
        with contextlib.suppress(errors.DuplicateObject, errors.UniqueViolation):
            connection.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                    " NOBYPASSRLS"
                ).format(sql.Identifier(role))
            )
    row = connection.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname = %s",
        (role,),
    ).fetchone()
    if row is None or any(row):
        raise UnsafeRole(
            f"role {role} is a superuser or may create roles or databases, replicate or bypass "
            "row security: a service must not connect with such powers (ALTER ROLE "
            f"{role} NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS)"
        )


def _role_exists(connection: psycopg.Connection, role: str) -> bool:
    found = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return found is not None


def append_only_tables(connection: psycopg.Connection, schema: str) -> list[str]:
    """The tables of `schema` that a `*_append_only` trigger guards."""
    rows = connection.execute(_APPEND_ONLY_TABLES, (schema, APPEND_ONLY_TRIGGER)).fetchall()
    return [row[0] for row in rows]


def grant_runtime_role(connection: psycopg.Connection, role: str, schema: str) -> None:
    """What `role` may do in the current database: its service's work on `schema` only.
    Idempotent; run as the role that owns `schema`'s objects, in one transaction."""
    role_id, schema_id = sql.Identifier(role), sql.Identifier(schema)
    database = connection.execute("SELECT current_database()").fetchone()
    assert database is not None
    statements = [
        # PUBLIC has CONNECT by default; a cluster that revoked it still lets the role in.
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database[0]), role_id),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema_id, role_id),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
            schema_id, role_id
        ),
        sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema_id, role_id),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT, INSERT, UPDATE, DELETE"
            " ON TABLES TO {}"
        ).format(schema_id, role_id),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE ON SEQUENCES TO {}").format(
            schema_id, role_id
        ),
    ]
    for table in append_only_tables(connection, schema):
        statements.append(
            sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {}.{} FROM {}").format(
                schema_id, sql.Identifier(table), role_id
            )
        )
    if _table_exists(connection, schema, VERSION_TABLE):
        statements.append(
            sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {}.{} FROM {}").format(
                schema_id, sql.Identifier(VERSION_TABLE), role_id
            )
        )
    with connection.transaction():
        for statement in statements:
            connection.execute(statement)


def _table_exists(connection: psycopg.Connection, schema: str, table: str) -> bool:
    found = connection.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, table)
    ).fetchone()
    return found is not None and found[0] is not None
