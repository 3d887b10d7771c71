"""The back office for tests: over its in-memory twins (MemoryStore, MemoryMesh) with a clock
the test moves, and signed in as an operator of a role; or started for real beside a mesh
(`started_backoffice`), with operators made by `paymesh operators create`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from starlette.testclient import TestClient

from backoffice.app import create_app
from backoffice.config import BackofficeSettings
from backoffice.memory_mesh import MemoryMesh
from backoffice.memory_store import MemoryStore
from backoffice.operators import create_operator
from dev.devinfra import Infra
from dev.devmesh import Mesh, Ports
from tests.support.mesh import base_env, migrated_infra, paymesh, started_mesh

PASSWORD = "correct horse battery staple"  # noqa: S105 - the tests' operators
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


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


# The real back office beside a mesh, for integration and browser tests.

ROLES = ("finance", "ops", "admin")


def create_operator_as_admin(env: dict[str, str], email: str, role: str) -> str:
    """`paymesh operators create`, as an operator runs it; returns the one-time password."""
    created = json.loads(paymesh("operators", "create", "--email", email, "--role", role, env=env))
    assert (created["email"], created["role"]) == (email, role)
    return str(created["password"])


@dataclass(frozen=True)
class BackofficeMesh:
    """A mesh with the back office, its database, and one operator per role
    (`<role>@example.com`, with the password `paymesh operators create` gave)."""

    mesh: Mesh
    infra: Infra
    env: dict[str, str]
    passwords: dict[str, str]  # email → password

    @property
    def url(self) -> str:
        return self.mesh.backoffice_url()

    def operator(self, role: str) -> tuple[str, str]:
        email = f"{role}@example.com"
        return email, self.passwords[email]


@contextlib.contextmanager
def backoffice_mesh(
    log_dir: Path, roles: tuple[str, ...] = ROLES, **env_overrides: str
) -> Iterator[BackofficeMesh]:
    """A mesh of its own with the back office (plain-HTTP cookies), on a migrated database of
    its own, and an operator per role. Needs the run's service keys (the `infra` fixture:
    PAYMESH_KEYS_DIR), which include the back office's."""
    with migrated_infra("paymesh_backoffice") as own:
        ports = Ports.free()
        env = base_env(
            own, **ports.service_env(), BACKOFFICE_COOKIE_SECURE="false", **env_overrides
        )
        passwords = {
            f"{role}@example.com": create_operator_as_admin(env, f"{role}@example.com", role)
            for role in roles
        }
        with started_mesh(env, ports, log_dir, with_backoffice=True) as running:
            yield BackofficeMesh(running, own, env, passwords)


def sign_in_over_http(http: httpx.Client, email: str, password: str) -> httpx.Response:
    """Signs in as a browser would: the sign-in page's CSRF token, then the form."""
    page = http.get("/login")
    match = CSRF_FIELD.search(page.text)
    assert match, page.text
    return http.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": match.group(1)},
        follow_redirects=False,
    )
