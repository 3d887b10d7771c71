"""Shared fixtures: a database and vhost of this run's own, migrated, and the whole mesh
(four services and Envoy on free ports) started once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from paymesh.devinfra import Infra, create_infra, drop_infra
from paymesh.devmesh import Mesh, Ports

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def migrate(database_url: str) -> None:
    subprocess.run(
        [str(BIN / "paymesh"), "migrate"],
        env={**os.environ, "DATABASE_URL": database_url},
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    created = create_infra()
    try:
        migrate(created.database_url)
        yield created
    finally:
        drop_infra(created)


def base_env(infra: Infra, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "AMQP_URL": infra.amqp_url,
        "HEALTH_PROBE_INTERVAL_SECONDS": "0.5",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    ports = Ports.free()
    env = base_env(infra, **ports.service_env())
    running = Mesh(env=env, ports=ports, log_dir=tmp_path_factory.mktemp("mesh-logs"))
    try:
        running.start_all(timeout=90)
        yield running
    finally:
        running.stop()
