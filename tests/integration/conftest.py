"""Fixtures of the integration tests that fault the PSP or kill processes, and the meshes
that several modules share."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pytest

from dev.devinfra import Infra
from dev.devmesh import Mesh, Ports
from tests.support.fault_mesh import fault_mesh
from tests.support.mesh import base_env, create_merchant, migrated_infra
from tests.support.psp import NO_FAULTS, breaker_state, close_sandbox_breaker, sandbox
from tests.support.receiver import running_receiver
from tests.support.webhooks import WEBHOOK_ENV, Hooks


@pytest.fixture
def knobs(mesh, merchant):
    """Sandbox knobs for one test, reset afterwards whatever happens, and the sandbox's breaker
    closed again, so that the next test meets a healthy PSP."""
    yield lambda **values: sandbox(mesh, "/_knobs", values)
    sandbox(mesh, "/_knobs", NO_FAULTS)
    close_sandbox_breaker(mesh, merchant)


# A mesh costs half a minute to start and ~36 database connections to keep, so modules that
# need the same configuration share one: a session fixture per configuration, closed right
# after the last test that uses it (not at the session's end, so that meshes do not pile up).
SHARED_MESHES: dict[str, contextlib.ExitStack] = {}
LAST_USER: dict[str, pytest.Item] = {}


def pytest_itemcollected(item: pytest.Item) -> None:
    """Under pytest-xdist (`make test` runs two workers with `--dist loadgroup`), the tests
    on the session's mesh are one group and the tests on the shared meshes another, the two
    longest, which start first, one on each worker; the renewal storms are a third, which the
    first worker free takes next; any other module is a group of its own.
    So every mesh starts once, and at most three are up at once (PostgreSQL's 100
    connections): the session's, and on each worker a shared one or a module's own. No test
    uses both the session's mesh and a shared one (pytest_collection_modifyitems checks).
    (Marked as each test is collected: xdist reads the groups before
    pytest_collection_modifyitems would mark them.)"""
    item.add_marker(pytest.mark.xdist_group(_group(item)))


# Modules whose meshes run hundreds of renewals on three workers and a broker or cluster of
# their own: each takes both cores while it runs. Side by side (one per xdist worker) their
# longest tests took 1.5-2x as long as apart, so they run one after the other.
RENEWAL_STORMS = {
    "tests.integration.test_rebill_faults",
    "tests.integration.test_rebill_broker",
    "tests.integration.test_rabbitmq_cluster",
}
GROUP_RANKS = {"meshes": 0, "shared-meshes": 1, "renewal-storms": 2}


def _group(item: pytest.Item) -> str:
    fixtures = set(getattr(item, "fixturenames", ()))
    if "mesh" in fixtures:
        return "meshes"
    if SHARED_MESH_FIXTURES & fixtures:
        return "shared-meshes"
    if item.module.__name__ in RENEWAL_STORMS:
        return "renewal-storms"
    return item.module.__name__


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs the modules that share a mesh one after the other, where the first of them runs,
    so that a shared mesh is never up beside another; the groups in GROUP_RANKS' order first
    (xdist hands the groups out in the order of their first test); notes each mesh's last
    test."""
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

    both = [
        item.nodeid
        for item in items
        if (names := set(getattr(item, "fixturenames", ()))) >= {"mesh"}
        and SHARED_MESH_FIXTURES & names
    ]
    if both:
        raise pytest.UsageError(f"tests on the session's mesh and a shared one at once: {both}")

    def order(item: pytest.Item) -> tuple[int, int]:
        return (GROUP_RANKS.get(_group(item), len(GROUP_RANKS)), place[item.module.__name__])

    items.sort(key=order)
    for item in items:
        for name in SHARED_MESH_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            LAST_USER[name] = item


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    for name, last in LAST_USER.items():
        if last is item and name in SHARED_MESHES:
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


FRAGILE = (("vault", "vault_proxy_svc"), ("gateway", "gateway_svc"))


def revive(mesh: Mesh) -> None:
    """Starts again whichever of the vault and the gateway a test killed or stopped."""
    for name, package in FRAGILE:
        if name not in mesh.processes or mesh.processes[name].poll() is not None:
            mesh.spawn(name, [sys.executable, "-m", package])
    mesh.wait_until([f"http://127.0.0.1:{mesh.ports.http[n]}/readyz" for n, _ in FRAGILE], 60)


@pytest.fixture(scope="session")
def fragile_mesh(infra, tmp_path_factory) -> Iterator[tuple[Mesh, Infra]]:
    """The PSP stand-ins, a vault and a gateway on a database of their own, to kill without
    hurting the session's mesh, whose recovery sweep would otherwise settle a test's intent
    first. (`infra` makes the session's service keys, which the vault and gateway need.)"""
    with shared("fragile_mesh") as stack:
        own = stack.enter_context(migrated_infra("paymesh_fragile"))
        ports = Ports.free()
        env = base_env(own, **ports.service_env())
        mesh = Mesh(env=env, ports=ports, log_dir=tmp_path_factory.mktemp("fragile"))
        stack.callback(mesh.stop)
        mesh.start_psp_stand_ins()
        revive(mesh)
        yield mesh, own


@pytest.fixture
def fragile(fragile_mesh):
    """The fragile mesh as a test expects to find it: the vault and the gateway running, no
    Envoy, the sandbox without faults, the gateway's breakers closed, and a merchant of the
    test's own (tests change their merchant's routing)."""
    mesh, own = fragile_mesh
    revive(mesh)
    yield mesh, own, create_merchant(own, "fragile")
    if "envoy" in mesh.processes:  # a test that started one
        mesh.stop("envoy")
        del mesh.processes["envoy"]
    sandbox(mesh, "/_knobs", NO_FAULTS)
    if mesh.processes["gateway"].poll() is None and not breakers_closed(mesh):
        mesh.stop("gateway")  # the next test's gateway starts with closed breakers


def breakers_closed(mesh: Mesh) -> bool:
    try:
        return breaker_state(mesh, "sandbox") == 0 and breaker_state(mesh, "stripe") == 0
    except (StopIteration, OSError):
        return False


SHARED_MESH_FIXTURES = {"webhook_hooks", "loopback_hooks", "fragile_mesh"}
