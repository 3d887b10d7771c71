"""Shared fixtures: a database and vhost of this run's own, migrated, and the whole mesh
(four services and Envoy on free ports) started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dev.devinfra import Infra, create_infra, drop_infra
from dev.devmesh import Mesh, Ports
from tests.support.mesh import (
    TestMerchant,
    base_env,
    create_merchant,
    create_merchant_as_operator,
    paymesh,
    started_mesh,
)


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """This run's own database and vhost, migrated, with service keys and a KEK keyring."""
    created = create_infra()
    secrets_dir = tmp_path_factory.mktemp("secrets")
    os.environ["PAYMESH_KEYS_DIR"] = str(secrets_dir / "keys")
    os.environ["VAULT_KEYRING_FILE"] = str(secrets_dir / "vault-keyring.json")
    try:
        env = base_env(created)
        for step in (["migrate"], ["keys", "init"], ["vault", "init-keyring"]):
            paymesh(*step, env=env)
        yield created
    finally:
        drop_infra(created)


@pytest.fixture(scope="session")
def merchant(infra: Infra) -> TestMerchant:
    return create_merchant_as_operator(infra, "acme")


@pytest.fixture(scope="session")
def other_merchant(infra: Infra) -> TestMerchant:
    return create_merchant(infra, "globex")


@pytest.fixture(scope="session")
def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    ports = Ports.free()
    env = base_env(infra, **ports.service_env())
    with started_mesh(env, ports, tmp_path_factory.mktemp("mesh-logs")) as running:
        yield running
