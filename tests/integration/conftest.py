"""Fixtures of the integration tests that fault the PSP or kill processes, and the meshes
that several modules share."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pytest

from paymesh.devinfra import create_infra, drop_infra
from paymesh.devmesh import Mesh, Ports
from tests.support.fault_mesh import fault_mesh
from tests.support.mesh import base_env, create_merchant, paymesh
from tests.support.psp import NO_FAULTS, close_sandbox_breaker, sandbox
from tests.support.receiver import running_receiver
from tests.support.webhooks import WEBHOOK_ENV, Hooks

# A mesh costs half a minute to start and ~36 database connections to keep, so modules that
# need the same configuration share one: a session fixture per configuration, closed right
# after the last test that uses it (not at the session's end, so that meshes do not pile up).
SHARED_MESHES: dict[str, contextlib.ExitStack] = {}
LAST_USER: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs the modules that share a mesh one after the other, where the first of them runs,
    so that a shared mesh is never up beside another; notes each mesh's last test."""
    shares: dict[str, set[str]] = {}
    for item in items:
        names = SHARED_MESH_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        shares.setdefault(item.module.__name__, set()).update(names)
    first_user: dict[str, int] = {}
    place: dict[str, int] = {}
    for index, module in enumerate(shares):
        place[module] = min(
            (first_user.setdefault(n, index) for n in shares[module]), default=index
        )
    items.sort(key=lambda item: place[item.module.__name__])
    for item in items:
        for name in SHARED_MESH_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            LAST_USER[name] = item.nodeid


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    for name, last in LAST_USER.items():
        if last == item.nodeid and name in SHARED_MESHES:
            SHARED_MESHES.pop(name).close()


@contextlib.contextmanager
def shared(name: str) -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        SHARED_MESHES[name] = stack
        try:
            yield stack
        finally:
            SHARED_MESHES.pop(name, None)


@pytest.fixture(scope="session")
def webhook_hooks(tmp_path_factory) -> Iterator[Hooks]:
    """A mesh of its own whose webhook_svc admits loopback and retries on the compressed
    schedule, and one receiver (test_webhooks, test_event_objects)."""
    with shared("webhook_hooks") as stack:
        receiver = stack.enter_context(running_receiver())
        directory = tmp_path_factory.mktemp("webhook-hooks")
        yield Hooks(stack.enter_context(fault_mesh(directory, **WEBHOOK_ENV)), receiver)


@pytest.fixture(scope="session")
def loopback_hooks(tmp_path_factory) -> Iterator[Hooks]:
    """A mesh of its own whose webhook_svc admits loopback, on the default retry schedule, and
    one receiver (test_disputes, test_three_d_secure)."""
    with shared("loopback_hooks") as stack:
        receiver = stack.enter_context(running_receiver())
        directory = tmp_path_factory.mktemp("loopback-hooks")
        env = {"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}
        yield Hooks(stack.enter_context(fault_mesh(directory, **env)), receiver)


SHARED_MESH_FIXTURES = {"webhook_hooks", "loopback_hooks"}


@pytest.fixture
def knobs(mesh, merchant):
    """Sandbox knobs for one test, reset afterwards whatever happens, and the sandbox's breaker
    closed again, so that the next test meets a healthy PSP."""
    yield lambda **values: sandbox(mesh, "/_knobs", values)
    sandbox(mesh, "/_knobs", NO_FAULTS)
    close_sandbox_breaker(mesh, merchant)


@pytest.fixture
def fragile(infra, tmp_path):
    """A gateway (and what it needs) with a database of its own, to kill without hurting the
    session's mesh, whose recovery sweep would otherwise settle this test's intent first.
    (`infra` makes the session's service keys, which the vault and gateway need to start.)"""
    own = create_infra("paymesh_fragile")
    ports = Ports.free()
    env = base_env(own, **ports.service_env())
    mesh = Mesh(env=env, ports=ports, log_dir=tmp_path)
    try:
        paymesh("migrate", env=env)
        merchant = create_merchant(own, "fragile")
        mesh.start_psp_stand_ins()
        for name, package in (("vault", "vault_proxy_svc"), ("gateway", "gateway_svc")):
            mesh.spawn(name, [sys.executable, "-m", package])
        mesh.wait_until(
            [f"http://127.0.0.1:{ports.http[n]}/readyz" for n in ("vault", "gateway")], 60
        )
        yield mesh, own, merchant
    finally:
        mesh.stop()
        drop_infra(own)
