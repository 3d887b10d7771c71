"""Applies a service's Alembic migrations to its own schema, creating the database first."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from paymesh.platform import roles
from paymesh.platform.db import sqlalchemy_url

ALEMBIC_DIR = Path(__file__).parent / "alembic"


def alembic_config(database_url: str, schema: str, versions_dir: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("version_locations", str(versions_dir))
    config.attributes["schema"] = schema
    config.attributes["url"] = sqlalchemy_url(database_url)
    return config


def upgrade(database_url: str, schema: str, versions_dir: Path) -> None:
    command.upgrade(alembic_config(database_url, schema, versions_dir), "head")


def grant_runtime_role(database_url: str, service: str, schema: str) -> str:
    """Creates `service`'s runtime role if missing and grants it its schema in this database
    (paymesh.platform.roles); returns the role's name."""
    role = roles.role_of(service)
    url = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(
        url.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
    ) as connection:
        roles.ensure_role(connection, role)
        roles.grant_runtime_role(connection, role, schema)
    return role


def _database_of(url: URL) -> str:
    if not url.database:
        raise ValueError("DATABASE_URL names no database")
    return url.database


def ensure_database(database_url: str) -> None:
    """Creates the database named in the URL if it does not exist yet."""
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(
        admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
    ) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (_database_of(url),)
        ).fetchone()
        if not exists:
            connection.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_database_of(url)))
            )


def drop_database(database_url: str) -> None:
    """Drops the database named in the URL, closing its connections (`paymesh dev reset`)."""
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(
        admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
    ) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(_database_of(url))
            )
        )
