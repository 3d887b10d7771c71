"""The kit knows a service only by the name it is given: keys and certificates are made for
the identities the top floor (paymesh_ops) names, and a service trusts the key pairs it finds."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from paymesh.platform.errors import Unauthenticated
from paymesh.platform.service_auth import TokenIssuer, TokenVerifier, init_keys
from paymesh.platform.tls import init_certs
from paymesh_ops import cli
from paymesh_ops.services import ALL


def usages(tls_dir: Path, identity: str) -> set:
    cert = x509.load_pem_x509_certificate((tls_dir / f"{identity}.crt").read_bytes())
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_keys_are_made_for_the_identities_given_and_no_others(tmp_path):
    assert init_keys(tmp_path, ["billing", "ops"]) == ["billing", "ops"]
    assert init_keys(tmp_path, ["billing", "ops"]) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "billing.key",
        "billing.pub",
        "ops.key",
        "ops.pub",
    ]


def test_a_service_trusts_the_key_pairs_beside_its_own_and_no_stranger(tmp_path):
    keys, elsewhere = tmp_path / "keys", tmp_path / "elsewhere"
    init_keys(keys, ["billing", "ops"])
    init_keys(elsewhere, ["stranger"])
    verifier = TokenVerifier("billing", keys)

    assert verifier.verify(TokenIssuer("ops", keys).token_for("billing")).name == "ops"
    with pytest.raises(Unauthenticated, match="unknown issuer 'stranger'"):
        verifier.verify(TokenIssuer("stranger", elsewhere).token_for("billing"))


def test_servers_get_server_certificates_and_clients_client_ones_only(tmp_path):
    created = init_certs(tmp_path, servers=["billing"], clients=["edge"])

    assert created == ["ca", "billing", "edge"]
    assert usages(tmp_path, "billing") == {
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
    }
    assert usages(tmp_path, "edge") == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_the_cli_makes_keys_and_certificates_for_every_service_of_the_list(tmp_path, monkeypatch):
    # The commands' handlers: cli.main would point the process's logging at pytest's stderr.
    monkeypatch.setenv("PAYMESH_KEYS_DIR", str(tmp_path / "keys"))
    assert cli.keys_init(argparse.Namespace()) == 0
    assert cli.certs_init(argparse.Namespace(dir=str(tmp_path / "certs"))) == 0

    services = set(ALL)
    assert {p.stem for p in (tmp_path / "keys").glob("*.pub")} == services | {"ops", "backoffice"}
    certificates = {p.stem for p in (tmp_path / "certs").glob("*.crt")} - {"ca"}
    assert certificates == services | {"envoy", "ops", "backoffice"}
    for identity in certificates:
        serves = ExtendedKeyUsageOID.SERVER_AUTH in usages(tmp_path / "certs", identity)
        assert serves == (identity in services), identity
