"""A whole mesh of a test's (or a module's) own: its own database, vhost, service keys and
keyring, so that killing its processes or changing its knobs hurts no other test."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from dev.devinfra import Infra, drop_infra
from dev.devmesh import Mesh, Ports
from tests.support.mesh import (
    TestMerchant,
    base_env,
    create_merchant,
    create_migrated_infra,
    paymesh,
    started_mesh,
)

# Short leases, so a killed worker's jobs come back within seconds; the connection budget
# of a shared PostgreSQL (base_env's pool settings; a worker holds prefetch + 2 connections).
FAULT_ENV = {
    "REBILL_LEASE_SECONDS": "2",
    "REBILL_RECHECK_SECONDS": "1",
    "REBILL_REQUEUE_AFTER_SECONDS": "20",
    "REBILL_SCHEDULER_IDLE_SECONDS": "0.2",
    "REBILL_WORKER_PREFETCH": "4",
}


_secrets: list[Path] = []


def made_secrets() -> Path:
    """Service keys and a vault keyring made once per test run by `paymesh keys init` and
    `paymesh vault init-keyring`, for each mesh of its own to copy (two Python starts each
    spared)."""
    if not _secrets:
        made = Path(tempfile.mkdtemp(prefix="paymesh-secrets-"))
        atexit.register(shutil.rmtree, made, ignore_errors=True)
        env = {
            **os.environ,
            "PAYMESH_KEYS_DIR": str(made / "keys"),
            "VAULT_KEYRING_FILE": str(made / "vault-keyring.json"),
        }
        env.pop("VAULT_KMS_PROVIDER", None)
        for step in (["keys", "init"], ["vault", "init-keyring"]):
            paymesh(*step, env=env)
        _secrets.append(made)
    return _secrets[0]


# Settings that depend on the test's own database (its URL through a pooler, say).
EnvOf = Callable[[Infra], dict[str, str]]


@contextlib.contextmanager
def own_infra(
    tmp_path: Path, env_of: EnvOf | None = None, **overrides: str
) -> Iterator[tuple[Infra, dict[str, str]]]:
    """A database and vhost of this test's own, migrated, with service keys and a keyring."""
    infra = create_migrated_infra("paymesh_rebill_faults")
    try:
        env = base_env(
            infra,
            PAYMESH_KEYS_DIR=str(tmp_path / "keys"),
            VAULT_KEYRING_FILE=str(tmp_path / "vault-keyring.json"),
            **{**FAULT_ENV, **overrides, **(env_of(infra) if env_of else {})},
        )
        secrets = made_secrets()
        shutil.copytree(secrets / "keys", tmp_path / "keys", dirs_exist_ok=True)
        shutil.copy(secrets / "vault-keyring.json", tmp_path / "vault-keyring.json")
        yield infra, env
    finally:
        drop_infra(infra)


@dataclass
class FaultMesh:
    mesh: Mesh
    infra: Infra
    merchant: TestMerchant
    db: psycopg.Connection

    def scalar(self, query: str, params: tuple | None = None):
        return self.db.execute(query, params).fetchone()[0]

    def rows(self, query: str, params: tuple | None = None) -> list[tuple]:
        return self.db.execute(query, params).fetchall()

    def spawn(self, name: str, argv: list[str], ready_port: int, **env: str) -> None:
        self.mesh.spawn(name, argv, env={**self.mesh.env, **env})
        self.mesh.wait_until([f"http://127.0.0.1:{ready_port}/readyz"], 60)

    def kill(self, name: str) -> None:
        process = self.mesh.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


@contextlib.contextmanager
def fault_mesh(
    tmp_path: Path, env_of: EnvOf | None = None, **overrides: str
) -> Iterator[FaultMesh]:
    """A whole mesh on free ports over a database of its own, stopped and dropped after."""
    with own_infra(tmp_path, env_of, **overrides) as (infra, base):
        ports = Ports.free()
        env = {**base, **ports.service_env()}
        merchant = create_merchant(infra, "faults")
        log_dir = tmp_path / "logs"
        log_dir.mkdir()
        with (
            started_mesh(env, ports, log_dir) as mesh,
            psycopg.connect(infra.database_url, autocommit=True) as db,
        ):
            yield FaultMesh(mesh, infra, merchant, db)
