"""Databases, merchants and meshes as the tests make them: the ops command line run as an
operator would, the tests' environment (short intervals and timeouts), and whole meshes
stopped afterwards."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import psycopg
from psycopg import sql

from backoffice.config import BackofficeSettings
from dev.devinfra import PG_ADMIN_URL, Infra, create_infra, drop_infra
from dev.devmesh import Mesh, Ports, service_database_urls
from gateway_svc.merchants import MerchantRepository
from paymesh.platform.db import create_engine
from paymesh_ops.services import ALL, BACKOFFICE

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def paymesh(*args: str, env: dict[str, str]) -> str:
    """Runs the ops command line as an operator would; returns what it printed."""
    done = subprocess.run(
        [str(BIN / "paymesh"), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass(frozen=True)
class TestMerchant:
    __test__ = False  # a merchant of the tests, not a class of tests

    id: str
    secret_key: str
    live_secret_key: str

    def auth(self, live: bool = False) -> dict[str, str]:
        return {"authorization": f"Bearer {self.live_secret_key if live else self.secret_key}"}


def create_merchant_as_operator(infra: Infra, name: str) -> TestMerchant:
    """A merchant made with `paymesh merchants create`, as an operator makes one."""
    created = json.loads(paymesh("merchants", "create", "--name", name, env=base_env(infra)))
    return TestMerchant(created["id"], created["secret_key"], created["live_secret_key"])


def create_merchant(infra: Infra, name: str) -> TestMerchant:
    """A merchant made by the repository call `paymesh merchants create` makes, in this
    process: a command line would cost a Python start (seconds on a busy machine) each."""

    async def create():
        engine = create_engine(infra.database_url, pool_size=1)
        try:
            return await MerchantRepository(engine).create(name)
        finally:
            await engine.dispose()

    created = asyncio.run(create())
    return TestMerchant(created.id, created.secret_key, created.live_secret_key)


def base_env(infra: Infra, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "AMQP_URL": infra.amqp_url,
        # PostgreSQL's 100 connections are shared by up to three meshes under `make test`:
        # each process keeps one pooled connection while idle and opens at most 3 per pool.
        "DB_POOL_SIZE": "3",
        "DB_POOL_KEEP": "1",
        "HEALTH_PROBE_INTERVAL_SECONDS": "0.5",
        "SHUTDOWN_GRACE_SECONDS": "5",
        "SHUTDOWN_DRAIN_DELAY_SECONDS": "0.5",
        "VAULT_REWRAP_INTERVAL_SECONDS": "0.5",
        "GATEWAY_PSP_TIMEOUT_SECONDS": "1",
        "GATEWAY_PSP_DEADLINE_SECONDS": "2",
        # A payment's 3 attempts at a dead PSP open its breaker; one good probe closes it.
        "GATEWAY_BREAKER_MIN_CALLS": "3",
        "GATEWAY_BREAKER_WINDOW_CALLS": "6",
        "GATEWAY_BREAKER_RESET_SECONDS": "2",
        "GATEWAY_BREAKER_PROBES": "1",
        "GATEWAY_VAULT_TIMEOUT_SECONDS": "2",
        "GATEWAY_RECOVERY_AFTER_SECONDS": "10",
        "GATEWAY_RECOVERY_INTERVAL_SECONDS": "0.5",
        "VAULT_REWRAP_BATCH_SIZE": "50",
        "GATEWAY_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "1",
        "REBILL_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "1",
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.update(overrides)
    return env


def service_database_url(env: dict[str, str], service: str) -> str:
    """The database URL a mesh's `service` process (or its back office) connects with: its
    settings class, read from the environment a Mesh spawns it with."""
    settings_class = BackofficeSettings if service == BACKOFFICE else ALL[service].settings_class
    with mock.patch.dict(os.environ, {**env, **service_database_urls(env)}, clear=True):
        return settings_class().database_url


_templates: list[Infra] = []


def migrated_template() -> Infra:
    """A database `paymesh migrate` made once per test run, for migrated databases to be
    copied from: a copy takes a fraction of a second, a migration a Python start and more."""
    if not _templates:
        template = Infra(f"paymesh_template_{uuid.uuid4().hex[:10]}")
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template.name)))
        atexit.register(_drop_database, template.name)
        paymesh("migrate", env=base_env(template))
        _templates.append(template)
    return _templates[0]


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def create_migrated_infra(name: str) -> Infra:
    """A database (and vhost) of its own named after `name`, as `paymesh migrate` leaves it."""
    template = migrated_template()
    created = create_infra(name)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(created.name)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(created.name), sql.Identifier(template.name)
            )
        )
    return created


@contextlib.contextmanager
def migrated_database(name: str) -> Iterator[Infra]:
    """A database of its own named after `name`, migrated, and no RabbitMQ vhost (two
    `rabbitmqctl` runs of seconds each spared): for tests that talk to PostgreSQL alone."""
    created = Infra(f"{name}_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(created.name), sql.Identifier(migrated_template().name)
            )
        )
    try:
        yield created
    finally:
        _drop_database(created.name)


@contextlib.contextmanager
def migrated_infra(name: str) -> Iterator[Infra]:
    """A database (and vhost) of its own named after `name`, migrated; dropped afterwards."""
    created = create_migrated_infra(name)
    try:
        yield created
    finally:
        drop_infra(created)


@contextlib.contextmanager
def started_mesh(
    env: dict[str, str],
    ports: Ports,
    log_dir: Path,
    timeout: float = 90,
    with_backoffice: bool = False,
) -> Iterator[Mesh]:
    """A whole mesh, stopped afterwards (also when it did not come up); with the back office
    when asked (tests.support.backoffice.backoffice_mesh)."""
    running = Mesh(env=env, ports=ports, log_dir=log_dir, with_backoffice=with_backoffice)
    try:
        running.start_all(timeout=timeout)
        yield running
    finally:
        running.stop()
