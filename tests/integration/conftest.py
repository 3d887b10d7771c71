"""Fixtures of the integration tests that fault the PSP or kill processes."""

from __future__ import annotations

import sys
import time

import pytest

from dev.devinfra import create_infra, drop_infra
from dev.devmesh import Mesh, Ports
from tests.conftest import base_env, create_merchant, paymesh
from tests.integration.test_payments import post
from tests.integration.test_vault import tokenize
from tests.support.psp import NO_FAULTS, breaker_state, sandbox
from tests.support.waiting import wait_until

BREAKER_RESET_SECONDS = 2.2  # GATEWAY_BREAKER_RESET_SECONDS in the tests' environment, and a bit


@pytest.fixture
def knobs(mesh, merchant):
    """Sandbox knobs for one test, reset afterwards whatever happens, and the sandbox's breaker
    closed again, so that the next test meets a healthy PSP."""
    yield lambda **values: sandbox(mesh, "/_knobs", values)
    sandbox(mesh, "/_knobs", NO_FAULTS)
    close_sandbox_breaker(mesh, merchant)


def close_sandbox_breaker(mesh, merchant) -> None:
    """Waits out an open breaker's cool-down, then pays until the half-open probe closes it."""
    if breaker_state(mesh, "sandbox") == 0:
        return
    time.sleep(BREAKER_RESET_SECONDS)
    token = tokenize(mesh, merchant).body["id"]
    body = {"amount": 100, "currency": "usd", "payment_method": token, "confirm": True}
    wait_until(
        lambda: (
            post(mesh, merchant, "/v1/payment_intents", body).status == 200
            and breaker_state(mesh, "sandbox") == 0
        ),
        timeout=20,
        interval=0.5,
    )


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
