"""Fixtures of the integration tests that fault the PSP or kill processes."""

from __future__ import annotations

import sys

import pytest

from paymesh.devinfra import create_infra, drop_infra
from paymesh.devmesh import Mesh, Ports
from tests.support.mesh import base_env, create_merchant, paymesh
from tests.support.psp import NO_FAULTS, close_sandbox_breaker, sandbox


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
