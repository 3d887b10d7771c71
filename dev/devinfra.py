"""Per-run PostgreSQL databases and RabbitMQ vhosts with unique names, for tests and
benchmarks, so runs never collide and nothing leaks between them."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Infra:
    name: str

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{self.name}"


def create_infra(prefix: str = "paymesh_test") -> Infra:
    infra = Infra(f"{prefix}_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(infra.name)))
    _rabbitmqctl("add_vhost", infra.name)
    _rabbitmqctl("set_permissions", "-p", infra.name, "guest", ".*", ".*", ".*")
    return infra


def drop_infra(infra: Infra) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(infra.name))
        )
    _rabbitmqctl("delete_vhost", infra.name)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
