"""A real pgbouncer (Debian's 1.18; `make test` fetches its package when it is not installed)
in transaction mode on a free loopback port, in front of the shared PostgreSQL: what a
deployment behind a connection pooler runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from dev.devmesh import free_port

ROOT = Path(__file__).resolve().parents[2]
FETCHED = ROOT / "build" / "pgbouncer" / "usr" / "sbin" / "pgbouncer"


def pgbouncer_binary() -> Path:
    found = (
        os.environ.get("PGBOUNCER_BIN")
        or shutil.which("pgbouncer")
        or next((p for p in ("/usr/sbin/pgbouncer",) if Path(p).is_file()), None)
        or str(FETCHED)
    )
    if not Path(found).is_file():
        pytest.fail(f"no pgbouncer at {found}: `make test` fetches it (tools/fetch_pgbouncer.sh)")
    return Path(found)


def _libraries_beside(binary: Path) -> dict[str, str]:
    """LD_LIBRARY_PATH for a binary unpacked from its package (libc-ares2 unpacked beside)."""
    libs = sorted(binary.parents[2].glob("usr/lib/*/libcares.so.2"))
    return {"LD_LIBRARY_PATH": str(libs[0].parent)} if libs else {}


@dataclass(frozen=True)
class Pgbouncer:
    port: int
    directory: Path

    def url(self, database_url: str) -> str:
        """`database_url`'s database, through this pgbouncer."""
        return (
            make_url(database_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    def show(self, what: str) -> list[tuple]:
        """`SHOW <what>` on pgbouncer's admin console (pools, servers, clients, …)."""
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/pgbouncer",
            autocommit=True,
            prepare_threshold=None,
        ) as console:
            return console.execute(f"SHOW {what}").fetchall()


@contextlib.contextmanager
def running_pgbouncer(pool_size: int = 4) -> Iterator[Pgbouncer]:
    """pgbouncer in transaction mode, `pool_size` server connections per database at most, in
    front of 127.0.0.1:5432 (trust; every role looked up through auth_query as postgres)."""
    binary = pgbouncer_binary()
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="paymesh-pgbouncer-"))
    (directory / "users.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                "* = host=127.0.0.1 port=5432",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                "auth_user = postgres",
                f"auth_file = {directory / 'users.txt'}",
                "admin_users = postgres",
                "pool_mode = transaction",
                f"default_pool_size = {pool_size}",
                "max_client_conn = 500",
                f"logfile = {directory / 'pgbouncer.log'}",
                f"pidfile = {directory / 'pgbouncer.pid'}",
                "",
            ]
        )
    )
    argv = [str(binary), str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        shutil.chown(directory, "postgres")
        for entry in directory.iterdir():
            shutil.chown(entry, "postgres")
        argv = ["runuser", "-u", "postgres", "--", *argv]
    process = subprocess.Popen(
        argv,
        env={**os.environ, **_libraries_beside(binary)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    bouncer = Pgbouncer(port, directory)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                bouncer.show("version")
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = directory / "pgbouncer.log"
                    raise RuntimeError(
                        f"pgbouncer did not start: {log.read_text() if log.exists() else ''}"
                    ) from None
                time.sleep(0.1)
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
