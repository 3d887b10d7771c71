"""`paymesh keys rotate`: a service identity's signing key is replaced while its old public
key still verifies for an overlap window; the new key signs at once, in running processes
too (no restart); secrets derived from the identity stay the same; the keys' ages are
metrics; and no key is ever logged whole."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time

import pytest
from prometheus_client import REGISTRY

from paymesh.platform.problems import Unauthenticated
from paymesh.platform.secrets import FileSecrets
from paymesh.platform.service_auth import TokenIssuer, TokenVerifier, init_keys, rotate_keys
from paymesh_ops import cli
from tests.support.logs import service_logs


def test_the_old_key_verifies_for_the_overlap_window_and_the_new_one_signs(tmp_path):
    init_keys(tmp_path, ["gateway", "vault"])
    issuer = TokenIssuer("gateway", tmp_path, reload_seconds=0)
    # Reads the keys again only on a token it cannot verify.
    verifier = TokenVerifier("vault", tmp_path, reload_seconds=3600, min_reload_seconds=0)
    before = issuer.token_for("vault")
    secret = issuer.derived_secret("gateway idempotency keys")
    old_pem = (tmp_path / "gateway.key").read_text()
    # As before key rotation existed: an HMAC keyed with the key file's bytes.
    purpose = b"gateway idempotency keys"
    assert secret == hmac.new(old_pem.encode(), purpose, hashlib.sha256).digest()

    with service_logs() as logs:
        assert rotate_keys(FileSecrets(tmp_path), ["gateway"], overlap_seconds=600) == ["gateway"]
        after = issuer.token_for("vault")  # the running issuer signs with the new key
        assert after != before
        assert verifier.verify(after).name == "gateway"  # a verifier learns the new key
        assert verifier.verify(before).name == "gateway"  # the old one holds in the window
    assert (tmp_path / "gateway.key").read_text() != old_pem
    assert issuer.derived_secret("gateway idempotency keys") == secret
    assert TokenIssuer("gateway", tmp_path).derived_secret("gateway idempotency keys") == secret

    # Past the window the old key verifies nothing, in a running verifier or a new one.
    later = time.time() + 601
    for judge in (verifier, TokenVerifier("vault", tmp_path)):
        with pytest.raises(Unauthenticated):
            judge.verify_at(before, later)
        assert judge.verify_at(after, time.time()).name == "gateway"

    written = logs.getvalue()
    assert "key_rotated" in written
    for line in old_pem.splitlines()[1:-1] + (tmp_path / "gateway.key").read_text().split():
        if len(line) > 8:
            assert line not in written


def test_an_expired_old_key_is_removed_by_the_next_rotation(tmp_path):
    init_keys(tmp_path, ["gateway"])
    rotate_keys(FileSecrets(tmp_path), ["gateway"], overlap_seconds=0, now=time.time() - 10)
    assert len(list(tmp_path.glob("gateway.pub.until-*"))) == 1
    rotate_keys(FileSecrets(tmp_path), ["gateway"], overlap_seconds=600)
    assert len(list(tmp_path.glob("gateway.pub.until-*"))) == 1  # only the one just retired


def test_the_cli_rotates_every_identity_and_reports_the_window(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PAYMESH_KEYS_DIR", str(tmp_path))
    assert cli.keys_init(argparse.Namespace()) == 0
    capsys.readouterr()
    assert cli.keys_rotate(argparse.Namespace(identity=["gateway"], overlap_seconds=120)) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["rotated"] == ["gateway"]
    assert report["old_keys_verify_for_seconds"] == 120
    assert len(list(tmp_path.glob("gateway.pub.until-*"))) == 1
    assert not list(tmp_path.glob("vault.pub.until-*"))


def test_a_signing_key_age_is_a_metric(tmp_path):
    init_keys(tmp_path, ["keyage"])
    TokenIssuer("keyage", tmp_path).token_for("vault")
    age = REGISTRY.get_sample_value("service_key_age_seconds", {"identity": "keyage"})
    assert age is not None and 0 <= age < 60


def test_the_audit_key_age_is_a_metric(tmp_path):
    from paymesh.platform.audit_keys import AuditKeys, add_audit_key

    add_audit_key(tmp_path)
    AuditKeys.load(tmp_path)
    age = REGISTRY.get_sample_value("audit_key_age_seconds")
    assert age is not None and 0 <= age < 60
