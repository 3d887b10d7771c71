"""Settings read once from the environment (pydantic-settings); defaults match .env.example.
The kit holds what every service shares; each service subclasses ServiceSettings in its own
`<service>/config.py`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from paymesh.platform.metrics import PSP_KEY_AGE
from paymesh.platform.secrets import (
    RotatingSecret,
    SecretSource,
    SourceKind,
    build_source,
    report_age,
)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/paymesh"


def database_url_field(prefix: str) -> Any:
    """A service's database URL: `<PREFIX>DATABASE_URL` (GATEWAY_DATABASE_URL, …), the
    service's own role (`paymesh_<service>`, paymesh.platform.roles), or DATABASE_URL when
    that is unset."""
    return Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices(f"{prefix}DATABASE_URL", "DATABASE_URL"),
    )


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

    # Each service's settings read `<PREFIX>DATABASE_URL` first (database_url_field).
    database_url: str = Field(DEFAULT_DATABASE_URL, validation_alias="DATABASE_URL")
    # A streaming replica for list reads (the API's lists: intents, disputes, subscriptions,
    # renewals, events, webhook endpoints), which may lag the primary by a moment. Unset:
    # they read DATABASE_URL. Reads that must be fresh stay on the primary.
    database_read_url: str | None = Field(None, validation_alias="DATABASE_READ_URL")
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
    # Where the signing keys (service identities, audit) are read: `files` (PAYMESH_KEYS_DIR,
    # a mounted Secret works as it is) or `aws` (Secrets Manager, named
    # PAYMESH_AWS_SECRETS_PREFIX + "keys/" + the file's name).
    keys_source: Literal["files", "aws"] = Field("files", validation_alias="PAYMESH_KEYS_SOURCE")
    # Where PSP API keys are read (paymesh.platform.secrets): `env` (their own variables, with
    # development defaults), `files` (a directory of files, one per key, as Kubernetes mounts
    # a Secret: PAYMESH_SECRETS_DIR) or `aws` (AWS Secrets Manager, each key named
    # PAYMESH_AWS_SECRETS_PREFIX + its name). A key is read again when the PSP refuses it
    # (401) and every PAYMESH_SECRETS_REFRESH_SECONDS (0: only on a 401).
    secrets_source: SourceKind = Field("env", validation_alias="PAYMESH_SECRETS_SOURCE")
    secrets_dir: Path | None = Field(None, validation_alias="PAYMESH_SECRETS_DIR")
    aws_secrets_endpoint: str | None = Field(None, validation_alias="PAYMESH_AWS_SECRETS_ENDPOINT")
    aws_secrets_prefix: str = Field("paymesh/", validation_alias="PAYMESH_AWS_SECRETS_PREFIX")
    aws_region: str = Field("eu-west-1", validation_alias="AWS_REGION")
    secrets_refresh_seconds: float = Field(
        300.0, ge=0, validation_alias="PAYMESH_SECRETS_REFRESH_SECONDS"
    )
    # Audit rows whose details' JSON is larger than this are stored compressed (0: never).
    audit_compress_above_bytes: int = Field(
        4096, ge=0, validation_alias="AUDIT_COMPRESS_ABOVE_BYTES"
    )
    gateway_addr: str = Field("127.0.0.1:50051", validation_alias="GATEWAY_ADDR")
    vault_addr: str = Field("127.0.0.1:50052", validation_alias="VAULT_ADDR")

    grpc_port: int
    http_port: int

    @field_validator("amqp_url")
    @classmethod
    def _every_broker_address_parses(cls, value: str) -> str:
        """One AMQP URL, or a cluster's nodes comma-separated; refused at start, not at the
        first connection, when an address is empty or not an amqp(s):// URL."""
        for url in value.split(","):
            if not url.strip().startswith(("amqp://", "amqps://")):
                raise ValueError(f"AMQP_URL: {url.strip()!r} is not an amqp:// or amqps:// URL")
        return value

    @field_validator(
        "secrets_dir",
        "aws_secrets_endpoint",
        "database_read_url",
        "database_direct_url",
        "db_prepared_statements",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def key_store(self) -> SecretSource:
        """Where the signing keys are read (and `paymesh keys` writes them)."""
        return key_store(
            self.keys_source,
            self.keys_dir,
            self.aws_region,
            self.aws_secrets_endpoint,
            self.aws_secrets_prefix,
        )

    def secret_source(self, env_values: Mapping[str, str]) -> SecretSource:
        """The source of this service's secrets; `env_values` answer for `env` (the
        settings' own variables, by secret name)."""
        return build_source(
            self.secrets_source,
            env_values=env_values,
            directory=self.secrets_dir,
            aws_region=self.aws_region,
            aws_endpoint=self.aws_secrets_endpoint,
            aws_prefix=self.aws_secrets_prefix,
        )

    @model_validator(mode="after")
    def _files_need_a_directory(self) -> ServiceSettings:
        if self.secrets_source == "files" and self.secrets_dir is None:
            raise ValueError("PAYMESH_SECRETS_SOURCE=files needs PAYMESH_SECRETS_DIR")
        return self

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


def key_store(
    kind: str, keys_dir: Path, region: str, endpoint: str | None, prefix: str
) -> SecretSource:
    if kind == "aws":
        return build_source(
            "aws", aws_region=region, aws_endpoint=endpoint, aws_prefix=prefix + "keys/"
        )
    return build_source("files", directory=keys_dir)


def psp_keys(settings: ServiceSettings, env_keys: Mapping[str, str]) -> dict[str, RotatingSecret]:
    """Each PSP's API key, read as `<psp>-secret-key` from the secret source (`env_keys`, by
    PSP, answer for `env`), with its age reported (psp_key_age_seconds)."""
    source = settings.secret_source({f"{psp}-secret-key": key for psp, key in env_keys.items()})
    return {
        psp: RotatingSecret(
            source, f"{psp}-secret-key", on_read=report_age(PSP_KEY_AGE.labels(psp))
        )
        for psp in env_keys
    }
