"""The back office's settings (BACKOFFICE_*), read once from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from paymesh.platform.config import TlsSettings, database_url_field

# Each service's ops HTTP endpoint as `make run` starts them (the System page reads them).
DEFAULT_METRICS_URLS = (
    "gateway=http://127.0.0.1:9101/metrics,vault=http://127.0.0.1:9102/metrics,"
    "rebill=http://127.0.0.1:9103/metrics,webhook=http://127.0.0.1:9104/metrics,"
    "rebill_worker=http://127.0.0.1:9105/metrics"
)


class BackofficeSettings(TlsSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKOFFICE_", extra="ignore")

    # Its own role (`paymesh_backoffice`) on its own schema, like a service's.
    database_url: str = database_url_field("BACKOFFICE_")
    db_pool_size: int = Field(3, ge=1, validation_alias="BACKOFFICE_DB_POOL_SIZE")
    host: str = "127.0.0.1"
    port: int = 8090
    # Session cookies are `Secure` unless this is false (plain-HTTP development on loopback).
    cookie_secure: bool = True
    # A session ends after this long without a request, and this long after sign-in at most.
    session_idle_seconds: float = Field(1800.0, gt=0)
    session_max_seconds: float = Field(12 * 3600.0, gt=0)
    # The services it calls (the same variables the services read).
    gateway_addr: str = Field("127.0.0.1:50051", validation_alias="GATEWAY_ADDR")
    vault_addr: str = Field("127.0.0.1:50052", validation_alias="VAULT_ADDR")
    rebill_addr: str = Field("127.0.0.1:50053", validation_alias="REBILL_ADDR")
    webhook_addr: str = Field("127.0.0.1:50054", validation_alias="WEBHOOK_ADDR")
    # `name=url` pairs, comma-separated: each service process's Prometheus /metrics.
    metrics_urls: str = DEFAULT_METRICS_URLS
    # How long one RPC of a page may take.
    rpc_timeout_seconds: float = Field(5.0, gt=0)
    keys_dir: Path = Field(Path("var/keys"), validation_alias="PAYMESH_KEYS_DIR")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")

    def metrics_targets(self) -> dict[str, str]:
        targets = {}
        for pair in self.metrics_urls.split(","):
            name, _, url = pair.strip().partition("=")
            if name and url:
                targets[name.strip()] = url.strip()
        return targets

    @property
    def service_addresses(self) -> dict[str, str]:
        return {
            "gateway": self.gateway_addr,
            "vault": self.vault_addr,
            "rebill": self.rebill_addr,
            "webhook": self.webhook_addr,
        }
