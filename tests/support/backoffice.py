"""The back office for tests: over its in-memory twins (MemoryStore, MemoryMesh) with a clock
the test moves, and signed in as an operator of a role; or started for real beside a mesh
(`started_backoffice`), with operators made by `paymesh operators create`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from starlette.testclient import TestClient

from backoffice.app import create_app
from backoffice.config import BackofficeSettings
from backoffice.memory_mesh import MemoryMesh
from backoffice.memory_store import MemoryStore
from backoffice.operators import create_operator

PASSWORD = "correct horse battery staple"  # noqa: S105 - the tests' operators
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 12, 7, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Console:
    """A TestClient over the app and the twins behind it."""

    client: TestClient
    store: MemoryStore
    mesh: MemoryMesh
    clock: Clock

    def add_operator(self, role: str, email: str | None = None) -> str:
        email = email or f"{role}@example.com"
        asyncio.run(create_operator(self.store, email, role, PASSWORD))
        return email

    def csrf_from(self, path: str) -> str:
        match = CSRF_FIELD.search(self.client.get(path).text)
        assert match, f"no csrf_token field on {path}"
        return match.group(1)

    def sign_in(self, role: str) -> str:
        email = self.add_operator(role)
        token = self.csrf_from("/login")
        answer = self.client.post(
            "/login",
            data={"email": email, "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        return email


def console(
    idle_seconds: float = 1800, max_seconds: float = 43200, cookie_secure: bool = False
) -> Console:
    store, mesh, clock = MemoryStore(), MemoryMesh(), Clock()
    settings = BackofficeSettings(
        cookie_secure=cookie_secure,
        session_idle_seconds=idle_seconds,
        session_max_seconds=max_seconds,
    )
    app = create_app(store, mesh, settings, clock=clock)
    scheme = "https" if cookie_secure else "http"
    client = TestClient(app, base_url=f"{scheme}://testserver")
    return Console(client, store, mesh, clock)


# The real back office beside a mesh (dev.devmesh.Mesh), for integration and browser tests.


def backoffice_env(env: dict[str, str], port: int) -> dict[str, str]:
    """The environment `python -m backoffice` runs with beside a mesh started with `env`
    (a Mesh's env after Ports.service_env): plain HTTP cookies on loopback."""
    return {**env, "BACKOFFICE_PORT": str(port), "BACKOFFICE_COOKIE_SECURE": "false"}


def create_operator_as_admin(env: dict[str, str], email: str, role: str) -> str:
    """`paymesh operators create`, as an operator runs it; returns the one-time password."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "paymesh"),
            "operators",
            "create",
            "--email",
            email,
            "--role",
            role,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["email"] == email and created["role"] == role
    return str(created["password"])


@dataclass(frozen=True)
class RunningBackoffice:
    url: str
    operators: dict[str, str]  # email → password


def wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


@contextlib.contextmanager
def started_backoffice(
    mesh_env: dict[str, str],
    port: int,
    log: Path,
    roles: tuple[str, ...] = ("finance", "ops", "admin"),
) -> Iterator[RunningBackoffice]:
    """`python -m backoffice` against a running mesh (its env: DATABASE_URL migrated, the keys
    made), with one operator per role (`<role>@example.com`); stopped afterwards."""
    env = backoffice_env(mesh_env, port)
    operators = {
        f"{role}@example.com": create_operator_as_admin(env, f"{role}@example.com", role)
        for role in roles
    }
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "backoffice"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/login")
            yield RunningBackoffice(url, operators)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
