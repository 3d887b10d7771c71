"""GATEWAY_IDEMPOTENCY_STALE_SECONDS: how long a key held by a request that died (its caller
killed mid-call) keeps answering `idempotency_key_in_use` before a retry may take it over.
Unset, the recovery sweep's wait (60 s unless set); never so short that a request still
running could be taken over."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway_svc.config import GatewaySettings

# The integration tests' PSP settings (tests.support.mesh.base_env).
TEST_PSP = {
    "GATEWAY_PSP_TIMEOUT_SECONDS": "1",
    "GATEWAY_PSP_DEADLINE_SECONDS": "2",
    "GATEWAY_VAULT_TIMEOUT_SECONDS": "2",
    "GATEWAY_RECOVERY_AFTER_SECONDS": "10",
}


def test_the_stale_time_is_the_recovery_wait_unless_set(monkeypatch):
    monkeypatch.delenv("GATEWAY_IDEMPOTENCY_STALE_SECONDS", raising=False)
    assert GatewaySettings().idempotency_stale_after == 60.0
    for name, value in TEST_PSP.items():
        monkeypatch.setenv(name, value)
    assert GatewaySettings().idempotency_stale_after == 10.0
    monkeypatch.setenv("GATEWAY_IDEMPOTENCY_STALE_SECONDS", "9")
    assert GatewaySettings().idempotency_stale_after == 9.0


def test_patient_psp_deadlines_start_with_the_stale_time_unset(monkeypatch):
    # PSP deadlines of 30 s: a confirm may run 120 s; the sweep waits 121 s, and so does a key.
    monkeypatch.delenv("GATEWAY_IDEMPOTENCY_STALE_SECONDS", raising=False)
    monkeypatch.setenv("GATEWAY_PSP_TIMEOUT_SECONDS", "30")
    monkeypatch.setenv("GATEWAY_PSP_DEADLINE_SECONDS", "30")
    monkeypatch.setenv("GATEWAY_RECOVERY_AFTER_SECONDS", "121")
    assert GatewaySettings().idempotency_stale_after == 121.0


def test_a_stale_time_a_running_confirm_could_outlast_is_refused(monkeypatch):
    # A confirm may run for two PSP deadlines at each of two PSPs: 8 s here.
    for name, value in {**TEST_PSP, "GATEWAY_IDEMPOTENCY_STALE_SECONDS": "8"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="GATEWAY_IDEMPOTENCY_STALE_SECONDS"):
        GatewaySettings()
