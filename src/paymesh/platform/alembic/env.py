"""Alembic environment shared by every service: each service keeps its revisions in its own
`migrations/` folder and its version table in its own schema."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

config = context.config
schema = config.attributes["schema"]


def run_migrations_online() -> None:
    engine = create_engine(config.attributes["url"])
    with engine.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.commit()
        context.configure(
            connection=connection,
            version_table_schema=schema,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
