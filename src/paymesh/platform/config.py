"""Settings read once from the environment (pydantic-settings); defaults match .env.example.
The kit holds what every service shares; each service subclasses ServiceSettings in its own
`<service>/config.py`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class TlsSettings(BaseSettings):
    """mTLS on every gRPC hop, read by the servers and by the service channels."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # `paymesh certs init` output: ca.crt and <identity>.crt/.key. Unset: plaintext gRPC.
    tls_dir: Path | None = Field(None, validation_alias="PAYMESH_TLS_DIR")

    @field_validator("tls_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None


class ServiceSettings(TlsSettings):
    """Settings every service shares. Subclasses set `env_prefix` for their own ports."""

    # The data path: every statement runs here, one transaction at a time, so it may be a
    # transaction-pooling pgbouncer.
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/paymesh", validation_alias="DATABASE_URL"
    )
    # Straight to PostgreSQL, for what needs a session of its own: the leaders' advisory locks
    # and LISTEN (a few connections per process). Unset: DATABASE_URL.
    database_direct_url: str | None = Field(None, validation_alias="DATABASE_DIRECT_URL")
    # Server-side prepared statements on the data path (psycopg prepares a statement after a
    # few runs). Unset: on when the data path is the direct one, off when DATABASE_DIRECT_URL
    # names another address (a pgbouncer before 1.21 cannot carry them in transaction mode).
    db_prepared_statements: bool | None = Field(None, validation_alias="DB_PREPARED_STATEMENTS")
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/%2F", validation_alias="AMQP_URL")
    events_exchange: str = Field("paymesh.events", validation_alias="EVENTS_EXCHANGE")
    otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    # Loopback unless told otherwise; plaintext gRPC beyond loopback only when allowed.
    bind_host: str = Field("127.0.0.1", validation_alias="BIND_HOST")
    allow_plaintext: bool = Field(False, validation_alias="PAYMESH_ALLOW_PLAINTEXT")
    # How long in-flight calls may run after SIGTERM before connections are closed.
    shutdown_grace_seconds: float = Field(10.0, validation_alias="SHUTDOWN_GRACE_SECONDS")
    # After SIGTERM, how long health says NOT_SERVING while calls are still accepted, so load
    # balancers (Envoy checks every 2 s) stop routing here before the server stops.
    shutdown_drain_delay_seconds: float = Field(
        2.0, validation_alias="SHUTDOWN_DRAIN_DELAY_SECONDS"
    )
    # How often PostgreSQL and RabbitMQ are probed for the health status.
    health_probe_interval_seconds: float = Field(
        2.0, validation_alias="HEALTH_PROBE_INTERVAL_SECONDS"
    )
    # The most connections each of a process's two data-path pools (SQLAlchemy's, and the hot
    # statements' psycopg pool) opens under load.
    db_pool_size: int = Field(10, validation_alias="DB_POOL_SIZE", ge=1)
    # SQLAlchemy's pool keeps DB_POOL_KEEP open and closes any other as soon as it is given
    # back; the psycopg pool keeps one and closes another each DB_POOL_IDLE_SECONDS that it
    # had more than it needed.
    db_pool_keep: int = Field(2, validation_alias="DB_POOL_KEEP", ge=1)
    db_pool_idle_seconds: float = Field(10.0, validation_alias="DB_POOL_IDLE_SECONDS", gt=0)
    # Ed25519 key pairs of every service, for service tokens (`paymesh keys init`).
    keys_dir: Path = Field(Path("var/keys"), validation_alias="PAYMESH_KEYS_DIR")
    gateway_addr: str = Field("127.0.0.1:50051", validation_alias="GATEWAY_ADDR")
    vault_addr: str = Field("127.0.0.1:50052", validation_alias="VAULT_ADDR")

    grpc_port: int
    http_port: int

    @field_validator("database_direct_url", "db_prepared_statements", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def session_database_url(self) -> str:
        """Where session connections (advisory locks, LISTEN) go."""
        return self.database_direct_url or self.database_url

    @property
    def prepared_statements(self) -> bool:
        if self.db_prepared_statements is not None:
            return self.db_prepared_statements
        return self.session_database_url == self.database_url

    @model_validator(mode="after")
    def _plaintext_only_on_loopback_unless_allowed(self) -> ServiceSettings:
        plaintext_beyond_loopback = self.tls_dir is None and self.bind_host not in LOOPBACK_HOSTS
        if plaintext_beyond_loopback and not self.allow_plaintext:
            raise ValueError(
                f"BIND_HOST={self.bind_host} would serve plaintext gRPC beyond this machine: "
                "set PAYMESH_TLS_DIR for mTLS (`paymesh certs init`), or "
                "PAYMESH_ALLOW_PLAINTEXT=true"
            )
        return self
