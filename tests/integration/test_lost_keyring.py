"""A vault whose keyring cannot unwrap the cards in its database refuses to start, in one line
that says what is wrong and what to do; `make run` stops there with that line; and
`paymesh dev reset` drops only a development database."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import psycopg
import pytest

from dev.devinfra import create_infra, drop_infra
from dev.devmesh import Ports, service_database_urls
from tests.support.mesh import BIN, base_env, paymesh
from tests.support.vault import tokenize

pytestmark = pytest.mark.integration


def other_keyring(tmp_path, same_versions_as: str | None) -> str:
    """A keyring file: empty, or with new keys under the version names of another keyring."""
    versions = {}
    if same_versions_as:
        with open(same_versions_as) as original:
            names = json.load(original)["versions"]
        versions = {name: base64.b64encode(os.urandom(32)).decode() for name in names}
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"versions": versions}))
    return str(path)


@pytest.mark.parametrize("keyring", ["empty", "other keys, same versions"])
def test_the_vault_refuses_to_start_in_one_line_without_the_keys_of_its_cards(
    mesh, infra, merchant, tmp_path, keyring
):
    assert tokenize(mesh, merchant).status == 200
    same_versions_as = os.environ["VAULT_KEYRING_FILE"] if keyring != "empty" else None
    keyring_file = other_keyring(tmp_path, same_versions_as)
    env = base_env(infra, **Ports.free().service_env(), VAULT_KEYRING_FILE=keyring_file)
    env.update(service_database_urls(env))  # as its own role, as a mesh starts it

    vault = subprocess.run(
        [sys.executable, "-m", "vault_proxy_svc"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    output = (vault.stdout + vault.stderr).strip()
    assert vault.returncode != 0, output
    assert "Traceback" not in output
    # One error line (info lines before it, such as the secrets it loaded, are not errors).
    [error] = [
        entry["error"]
        for entry in map(json.loads, output.splitlines())
        if entry["level"] == "error"
    ]
    assert error.startswith("the vault database holds cards wrapped by KEK version 'local-")
    assert f"the keyring at {keyring_file}" in error
    assert "paymesh dev reset" in error


def test_make_run_stops_before_starting_anything_with_the_vaults_line(infra, mesh, tmp_path):
    ports = Ports.free()
    env = base_env(
        infra,
        **ports.service_env(),
        ENVOY_PORT=str(ports.envoy),
        ENVOY_ADMIN_PORT=str(ports.envoy_admin),
        VAULT_KEYRING_FILE=str(tmp_path / "lost" / "vault-keyring.json"),
    )

    run = subprocess.run(
        [sys.executable, "-m", "dev.devmesh"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 1
    assert "Traceback" not in run.stdout + run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("paymesh vault check-keys failed: the vault database holds")
    assert "paymesh dev reset" in line


def test_dev_reset_drops_a_dev_database_and_its_keyring_and_recreates_them(tmp_path):
    dev = create_infra("paymesh_dev")
    keyring = tmp_path / "vault-keyring.json"
    env = base_env(dev, VAULT_KEYRING_FILE=str(keyring))
    try:
        with psycopg.connect(dev.database_url, autocommit=True) as connection:
            connection.execute("CREATE TABLE public.leftover (id int)")
        keyring.write_text(json.dumps({"versions": {"local-1": "AAAA"}}))

        refused = subprocess.run(
            [str(BIN / "paymesh"), "dev", "reset"], env=env, capture_output=True, text=True
        )
        assert refused.returncode == 2 and "--yes" in refused.stderr
        paymesh("dev", "reset", "--yes", env=env)

        with psycopg.connect(dev.database_url) as connection:
            tables = connection.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables"
            ).fetchall()
        assert ("public.leftover",) not in tables
        assert ("vault.payment_methods",) in tables
        assert json.loads(keyring.read_text()) == {"versions": {}}
    finally:
        drop_infra(dev)


@pytest.mark.parametrize(
    "database_url",
    [
        "postgresql://postgres@127.0.0.1:5432/{test_db}",
        "postgresql://postgres@db.example.com:5432/paymesh",
    ],
)
def test_dev_reset_refuses_any_other_database(infra, database_url, tmp_path):
    keyring = tmp_path / "vault-keyring.json"
    keyring.write_text("{}")
    env = base_env(infra, DATABASE_URL=database_url.format(test_db=infra.name))
    env["VAULT_KEYRING_FILE"] = str(keyring)

    refused = subprocess.run(
        [str(BIN / "paymesh"), "dev", "reset", "--yes"], env=env, capture_output=True, text=True
    )

    assert refused.returncode == 2
    assert refused.stderr.startswith("paymesh dev reset: refused")
    assert keyring.exists()
    with psycopg.connect(infra.database_url) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
