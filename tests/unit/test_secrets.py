"""The secret sources (environment, mounted files), a rotating secret read again on demand and
on a timer, and keys shown only by their last 4 characters."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from paymesh.platform.secrets import (
    EnvSecrets,
    FileSecrets,
    RotatingSecret,
    SecretMissing,
    masked,
)
from tests.support.logs import service_logs

KEY_A = "sk_test_rotation_first_key_AAAA1111"
KEY_B = "sk_test_rotation_second_key_BBBB2222"


def test_a_key_is_shown_by_its_last_four_characters_only():
    assert masked(KEY_A) == "…1111"
    assert masked("short") == "…"
    assert KEY_A not in repr(EnvSecrets({"k": KEY_A}).read("k"))


def test_env_secrets_answer_the_settings_values_and_nothing_else():
    source = EnvSecrets({"stripe-secret-key": KEY_A})
    assert source.read("stripe-secret-key").value == KEY_A
    assert source.read("stripe-secret-key").changed_at is None
    with pytest.raises(SecretMissing):
        source.read("sandbox-secret-key")


def test_mounted_files_are_read_with_their_change_time(tmp_path):
    (tmp_path / "stripe-secret-key").write_text(KEY_A + "\n")
    os.utime(tmp_path / "stripe-secret-key", (time.time() - 3600, time.time() - 3600))
    secret = FileSecrets(tmp_path).read("stripe-secret-key")
    assert secret.value == KEY_A
    assert 3590 < secret.age_seconds() < 3700
    with pytest.raises(SecretMissing):
        FileSecrets(tmp_path).read("sandbox-secret-key")
    with pytest.raises(ValueError):
        FileSecrets(tmp_path).read("../etc/passwd")


def test_mounted_files_follow_a_kubernetes_style_symlink_swap(tmp_path):
    """Kubernetes updates a mounted Secret by pointing `..data` at a new folder."""
    for version, key in (("v1", KEY_A), ("v2", KEY_B)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "stripe-secret-key").write_text(key)
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "stripe-secret-key").symlink_to("..data/stripe-secret-key")
    source = FileSecrets(tmp_path)
    first = source.read("stripe-secret-key")
    (tmp_path / "..data_tmp").symlink_to("v2")
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")
    second = source.read("stripe-secret-key")
    assert (first.value, second.value) == (KEY_A, KEY_B)
    assert first.version != second.version
    assert source.names() == ["stripe-secret-key"]


def test_a_file_written_is_whole_and_private(tmp_path):
    source = FileSecrets(tmp_path)
    source.write("audit/k1.key", KEY_A)
    assert source.read("audit/k1.key").value == KEY_A
    assert (tmp_path / "audit" / "k1.key").stat().st_mode & 0o077 == 0
    assert source.names("audit/") == ["audit/k1.key"]


def test_a_rotating_secret_reads_again_on_demand_and_on_a_timer(tmp_path):
    path = tmp_path / "stripe-secret-key"
    path.write_text(KEY_A)
    seen = []
    with service_logs() as logs:
        secret = RotatingSecret(
            FileSecrets(tmp_path), "stripe-secret-key", min_reread_seconds=0, on_read=seen.append
        )
        asyncio.run(scenario(secret, path))
    assert len(seen) >= 3
    events = [json.loads(line) for line in logs.getvalue().splitlines()]
    rotated = [e for e in events if e["event"] == "secret_rotated"]
    assert rotated[0]["old_key"] == "…1111" and rotated[0]["new_key"] == "…2222"
    assert KEY_A not in logs.getvalue() and KEY_B not in logs.getvalue()


async def scenario(secret: RotatingSecret, path) -> None:

    assert secret.value == KEY_A
    assert not await secret.reread()
    path.write_text(KEY_B)
    assert await secret.reread()
    assert secret.value == KEY_B
    # Another call already read the new key: a call refused with the old one retries.
    assert await secret.reread(seen=KEY_A)
    path.write_text(KEY_A)
    timer = asyncio.create_task(secret.refresh(0.05))
    for _ in range(100):
        if secret.value == KEY_A:
            break
        await asyncio.sleep(0.02)
    timer.cancel()
    assert secret.value == KEY_A


def test_a_burst_of_rereads_reads_the_source_once(tmp_path):
    (tmp_path / "k").write_text(KEY_A)
    reads = []

    class Counting(FileSecrets):
        def read(self, name):
            reads.append(name)
            return super().read(name)

    secret = RotatingSecret(Counting(tmp_path), "k", min_reread_seconds=60)

    async def burst():
        await asyncio.gather(*(secret.reread() for _ in range(20)))

    asyncio.run(burst())
    assert len(reads) == 2  # the start, and one reread


def test_services_read_psp_keys_from_the_configured_source_and_report_their_age(
    tmp_path, monkeypatch
):
    from prometheus_client import REGISTRY

    from gateway_svc.config import GatewaySettings

    monkeypatch.setenv("PAYMESH_SECRETS_SOURCE", "files")
    monkeypatch.setenv("PAYMESH_SECRETS_DIR", str(tmp_path))
    (tmp_path / "stripe-secret-key").write_text(KEY_A)
    with pytest.raises(SecretMissing):  # a key missing from the source fails the start
        GatewaySettings().psp_keys()
    (tmp_path / "sandbox-secret-key").write_text(KEY_B)
    os.utime(tmp_path / "sandbox-secret-key", (time.time() - 100, time.time() - 100))
    keys = GatewaySettings().psp_keys()
    assert (keys["stripe"].value, keys["sandbox"].value) == (KEY_A, KEY_B)
    age = REGISTRY.get_sample_value("psp_key_age_seconds", {"psp": "sandbox"})
    assert 99 < age < 160
    monkeypatch.delenv("PAYMESH_SECRETS_DIR")
    with pytest.raises(ValueError, match="PAYMESH_SECRETS_DIR"):
        GatewaySettings()
