"""Fixtures of the integration tests that fault the PSP or kill processes."""

from __future__ import annotations

import sys

import pytest

from paymesh.devinfra import create_infra, drop_infra
from paymesh.devmesh import Mesh, Ports
from tests.conftest import BIN, base_env, create_merchant, paymesh
from tests.support.psp import NO_FAULTS, sandbox


@pytest.fixture
def knobs(mesh):
    """Sandbox knobs for one test, reset afterwards whatever happens."""
    yield lambda **values: sandbox(mesh, "/_knobs", values)
    sandbox(mesh, "/_knobs", NO_FAULTS)


@pytest.fixture
def fragile(tmp_path):
    """A gateway (and what it needs) with a database of its own, to kill without hurting the
    session's mesh, whose recovery sweep would otherwise settle this test's intent first."""
    own = create_infra("paymesh_fragile")
    ports = Ports.free()
    env = base_env(own, **ports.service_env())
    mesh = Mesh(env=env, ports=ports, log_dir=tmp_path)
    try:
        paymesh("migrate", env=env)
        merchant = create_merchant(own, "fragile")
        mesh.spawn(
            "localstripe",
            [str(BIN / "localstripe"), "--port", str(ports.localstripe), "--from-scratch"],
        )
        mesh.spawn(
            "sandbox_psp",
            [sys.executable, "-m", "paymesh.sandbox_psp", "--port", str(ports.sandbox_psp)],
        )
        for name, package in (("vault", "vault_proxy_svc"), ("gateway", "gateway_svc")):
            mesh.spawn(name, [sys.executable, "-m", package])
        mesh.wait_until(
            [f"http://127.0.0.1:{ports.http[n]}/readyz" for n in ("vault", "gateway")], 60
        )
        yield mesh, own, merchant
    finally:
        mesh.stop()
        drop_infra(own)
