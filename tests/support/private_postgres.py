"""A PostgreSQL cluster of a test's own (initdb + pg_ctl on a free port, as the `postgres`
user), to stop and start without touching the shared server; and a streaming replica of it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from dev.devinfra import Infra
from dev.devmesh import free_port
from tests.support.mesh import base_env, paymesh

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*argv: str, timeout: float = 120) -> None:
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{argv[0]}: {done.stdout}{done.stderr}"


@dataclass
class Cluster:
    data: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.data.parent / f"{self.data.name}.log"),
            # Loopback only, socket in the cluster's own directory; speed over durability.
            "-o",
            f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            "-w",
            "start",
        )

    def stop(self) -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def replica(self) -> Cluster:
        """A streaming replica of this cluster (pg_basebackup -R), started on a port of its
        own."""
        replica = Cluster(self.data.parent / f"replica-{uuid.uuid4().hex[:6]}", free_port())
        _as_postgres(
            str(PG_BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-D",
            str(replica.data),
            "-R",
            # At once: the default (spread) checkpoint paces its writes over most of
            # checkpoint_timeout, a minute or more after a migration on an idle cluster.
            "--checkpoint=fast",
        )
        replica.start()
        return replica


@contextlib.contextmanager
def private_cluster() -> Iterator[Cluster]:
    """A fresh cluster, running; stopped and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="paymesh-pg-"))
    shutil.chown(base, "postgres", "postgres")
    cluster = Cluster(base / "data", free_port())
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", "postgres")
    try:
        cluster.start()
        yield cluster
    finally:
        for version in base.glob("*/PG_VERSION"):  # the cluster and its replicas
            with contextlib.suppress(AssertionError, subprocess.SubprocessError):
                _as_postgres(
                    str(PG_BIN / "pg_ctl"), "-D", str(version.parent), "-m", "immediate", "stop"
                )
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class PrivateInfra(Infra):
    """A database on a private cluster, and a RabbitMQ vhost on the shared broker."""

    port: int = 0

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.name}"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def migrated_private_infra(cluster: Cluster, name: str) -> Iterator[PrivateInfra]:
    """A database on `cluster` that `paymesh migrate` made, and a vhost of its own. The vhost
    is made while the migration runs (each is a process start of seconds; neither needs the
    other)."""
    infra = PrivateInfra(f"{name}_{uuid.uuid4().hex[:10]}", cluster.port)
    with psycopg.connect(cluster.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(infra.name)))
    try:
        with ThreadPoolExecutor(1) as pool:
            vhost = pool.submit(_add_vhost, infra.name)
            try:
                paymesh("migrate", env=base_env(infra))
            finally:
                vhost.result()
        yield infra
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # never made
            _rabbitmqctl("delete_vhost", infra.name)


def _add_vhost(name: str) -> None:
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
