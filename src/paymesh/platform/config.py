"""Settings read once from the environment (pydantic-settings); defaults match .env.example."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/paymesh", validation_alias="DATABASE_URL"
    )
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
    db_pool_size: int = Field(10, validation_alias="DB_POOL_SIZE")
    # Ed25519 key pairs of every service, for service tokens (`paymesh keys init`).
    keys_dir: Path = Field(Path("var/keys"), validation_alias="PAYMESH_KEYS_DIR")
    gateway_addr: str = Field("127.0.0.1:50051", validation_alias="GATEWAY_ADDR")
    vault_addr: str = Field("127.0.0.1:50052", validation_alias="VAULT_ADDR")

    grpc_port: int
    http_port: int

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


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")
    grpc_port: int = 50051
    http_port: int = 9101
    stripe_api_base: str = Field("http://127.0.0.1:8420", validation_alias="STRIPE_API_BASE")
    stripe_secret_key: str = Field("sk_test_paymesh_dev", validation_alias="STRIPE_SECRET_KEY")
    sandbox_api_base: str = Field("http://127.0.0.1:8430", validation_alias="SANDBOX_API_BASE")
    # One PSP HTTP call may take this long; one PSP operation, all its retries included, is
    # cut off at the deadline.
    psp_timeout_seconds: float = 5.0
    psp_attempts: int = 3
    psp_deadline_seconds: float = 8.0
    # The vault's answer for a card's PSP token (asked once per PSP of a confirm).
    vault_timeout_seconds: float = 5.0
    # How long a card's PSP reference is kept in memory. A detached card is refused whatever
    # this is (the vault revokes it in the gateway's database first); this bounds the damage
    # of a detach that skipped the revocation (a vault older than this gateway, ops SQL).
    card_token_ttl_seconds: float = 60.0
    # Each PSP's circuit breaker (gateway_svc.psp.breaker): it opens when, for one operation,
    # at least FAILURE_RATIO of its last WINDOW_CALLS calls younger than WINDOW_SECONDS failed
    # and they are at least MIN_CALLS; after RESET_SECONDS it lets PROBES calls through, and
    # closes when they all succeed.
    breaker_failure_ratio: float = Field(0.5, gt=0, le=1)
    breaker_window_calls: int = Field(20, ge=1)
    breaker_window_seconds: float = Field(60.0, gt=0)
    breaker_min_calls: int = Field(10, ge=1)
    breaker_reset_seconds: float = Field(30.0, gt=0)
    breaker_probes: int = Field(3, ge=1)
    # PSP operations whose outcome is unknown longer than this are settled by asking the PSP.
    recovery_after_seconds: float = 60.0
    recovery_interval_seconds: float = 10.0
    # How often payment_audit's chain heads are signed (audit_checkpoints): newer rows are not
    # anchored yet.
    audit_checkpoint_interval_seconds: float = Field(30.0, gt=0)
    # Reconciliation on a schedule (in one gateway process): each PSP of the list, over the
    # last day, once this long has passed since its last successful run (0: never on its own).
    reconciliation_interval_seconds: float = Field(3600.0, ge=0)
    reconciliation_psps: str = "sandbox,stripe"
    # One page of a PSP's listing, or one lookup, may take this long.
    reconciliation_timeout_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _recovery_waits_for_every_psp_attempt(self) -> GatewaySettings:
        # The sweep may only call an authorization "not charged" once no call of it can still
        # be running. For each of the two PSPs, a confirm has the card created there (through
        # the vault) and then charges it, each within one PSP deadline.
        longest_confirm = 2 * 2 * self.psp_deadline_seconds
        if self.recovery_after_seconds <= longest_confirm:
            raise ValueError(
                f"GATEWAY_RECOVERY_AFTER_SECONDS must exceed {longest_confirm:g} s "
                "(for each of two PSPs, two PSP deadlines: the card and the charge)"
            )
        if self.vault_timeout_seconds > self.psp_deadline_seconds:
            raise ValueError("GATEWAY_VAULT_TIMEOUT_SECONDS must not exceed the PSP deadline")
        if self.psp_timeout_seconds > self.psp_deadline_seconds:
            raise ValueError("GATEWAY_PSP_TIMEOUT_SECONDS must not exceed the PSP deadline")
        if self.breaker_min_calls > self.breaker_window_calls:
            raise ValueError(
                "GATEWAY_BREAKER_MIN_CALLS must not exceed GATEWAY_BREAKER_WINDOW_CALLS"
            )
        return self


class VaultSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_")
    grpc_port: int = 50052
    http_port: int = 9102
    # Key-encryption keys: `local` (a keyring file, for dev and tests) or `aws-kms`.
    kms_provider: Literal["local", "aws-kms"] = "local"
    keyring_file: Path = Path("var/vault-keyring.json")
    # AWS KMS (boto3); the endpoint points at moto's server in tests.
    aws_kms_endpoint: str | None = None
    aws_region: str = Field("eu-west-1", validation_alias="AWS_REGION")
    # How many cards one re-wrap round moves to the primary KEK, and how often it runs.
    rewrap_batch_size: int = 200
    rewrap_interval_seconds: float = 5.0
    # A CVC waits in memory (never on disk) for the first authorization at most this long.
    cvc_ttl_seconds: float = 300.0
    stripe_api_base: str = Field("http://127.0.0.1:8420", validation_alias="STRIPE_API_BASE")
    stripe_secret_key: str = Field("sk_test_paymesh_dev", validation_alias="STRIPE_SECRET_KEY")
    sandbox_api_base: str = Field("http://127.0.0.1:8430", validation_alias="SANDBOX_API_BASE")


class RebillSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REBILL_")
    grpc_port: int = 50053
    http_port: int = 9103
    # The scheduler: how many subscriptions one transaction renews, and how often at least it
    # scans for what fell due (a test clock's advance, a resume, or an outcome whose next
    # period is due already wakes it at once).
    scheduler_batch_size: int = 500
    scheduler_idle_seconds: float = 1.0
    # A worker heartbeats its job's lease; a lease not renewed for this long is reclaimed.
    lease_seconds: float = 30.0
    # An attempt whose outcome is unknown is asked about again (same key) after this.
    recheck_seconds: float = 10.0
    # A queued job no worker took for this long is published again (a lost queue).
    requeue_after_seconds: float = 300.0
    # Workers: messages in flight per worker, and the ops port for /metrics (0: none).
    worker_prefetch: int = 16
    worker_http_port: int = 9105
    # How often rebill_audit's chain heads are signed (audit_checkpoints).
    audit_checkpoint_interval_seconds: float = Field(30.0, gt=0)


class WebhookSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOK_")
    grpc_port: int = 50054
    http_port: int = 9104
    # Outbound deliveries. The waits before attempts 1, 2, 3, … in seconds (Standard
    # Webhooks' schedule, about three days; tests compress it); each is jittered ±10 %.
    retry_schedule: str = "0,5,300,1800,7200,18000,36000,50400,72000,86400"
    # One delivery request may take this long (connect to answer).
    delivery_timeout_seconds: float = Field(10.0, gt=0, le=15)
    # Networks that endpoints may resolve to although private, loopback, link-local or
    # reserved (comma-separated CIDRs; `make run` admits loopback). Empty: public only.
    allowed_networks: str = ""
    # Sends in flight per replica, and at most this many to one endpoint.
    max_in_flight: int = 200
    endpoint_concurrency: int = 8
    # An endpoint's circuit opens after this many failures in a row and half-opens after
    # the cool-down; while open, its deliveries wait without spending attempts.
    breaker_fail_max: int = 5
    breaker_reset_seconds: float = 30.0
    # An endpoint whose every delivery failed for this long is disabled (5 days).
    disable_after_seconds: float = 432000.0
    # Inbound PSP webhooks: each PSP's endpoint secret (comma-separated while one is rolled:
    # a signature made with any of them is accepted), and how far a signature's timestamp may
    # be from now. The defaults are for development only.
    stripe_secret: str = "whsec_paymesh_dev_stripe"  # noqa: S105 - a dev default
    sandbox_secret: str = "whsec_paymesh_dev_sandbox"  # noqa: S105 - a dev default
    psp_signature_tolerance_seconds: float = Field(300.0, gt=0)

    @field_validator("retry_schedule")
    @classmethod
    def _schedule_is_seconds(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts or any(not p.replace(".", "", 1).isdigit() for p in parts):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE: comma-separated seconds, e.g. 0,5,300")
        return value
