"""Which database URL each service reads (`<PREFIX>DATABASE_URL`, else DATABASE_URL), and the
role URLs `make run` and the tests' meshes derive from DATABASE_URL; the back office's too."""

from __future__ import annotations

import pytest

from backoffice.config import BackofficeSettings
from dev.devmesh import service_database_urls
from gateway_svc.config import GatewaySettings
from rebill_svc.config import RebillSettings
from vault_proxy_svc.config import VaultSettings
from webhook_svc.config import WebhookSettings

SETTINGS = {
    "GATEWAY_": GatewaySettings,
    "VAULT_": VaultSettings,
    "REBILL_": RebillSettings,
    "WEBHOOK_": WebhookSettings,
    "BACKOFFICE_": BackofficeSettings,
}


@pytest.mark.parametrize(("prefix", "settings_class"), SETTINGS.items())
def test_a_service_reads_its_own_url_first_and_database_url_else(
    monkeypatch, prefix, settings_class
):
    monkeypatch.setenv("DATABASE_URL", "postgresql://owner@db/paymesh")
    monkeypatch.delenv(f"{prefix}DATABASE_URL", raising=False)
    assert settings_class().database_url == "postgresql://owner@db/paymesh"
    monkeypatch.setenv(f"{prefix}DATABASE_URL", "postgresql://mine:secret@db/paymesh")
    assert settings_class().database_url == "postgresql://mine:secret@db/paymesh"


def test_the_meshes_give_each_service_its_role_on_database_urls_server_and_database():
    urls = service_database_urls({"DATABASE_URL": "postgresql://postgres:pw@10.0.0.5:6432/db_x"})
    assert urls == {
        "GATEWAY_DATABASE_URL": "postgresql://paymesh_gateway@10.0.0.5:6432/db_x",
        "VAULT_DATABASE_URL": "postgresql://paymesh_vault@10.0.0.5:6432/db_x",
        "REBILL_DATABASE_URL": "postgresql://paymesh_rebill@10.0.0.5:6432/db_x",
        "WEBHOOK_DATABASE_URL": "postgresql://paymesh_webhook@10.0.0.5:6432/db_x",
        "BACKOFFICE_DATABASE_URL": "postgresql://paymesh_backoffice@10.0.0.5:6432/db_x",
    }


def test_the_meshes_keep_a_url_the_environment_sets():
    env = {
        "DATABASE_URL": "postgresql://postgres@h/db",
        "VAULT_DATABASE_URL": "postgresql://v@h/db",
    }
    assert "VAULT_DATABASE_URL" not in service_database_urls(env)
    assert len(service_database_urls(env)) == 4
