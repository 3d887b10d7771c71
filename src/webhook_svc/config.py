"""webhook_svc's settings: the ones every service shares (ServiceSettings) and its own."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from paymesh.platform.config import ServiceSettings, database_url_field


class WebhookSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOK_")
    database_url: str = database_url_field("WEBHOOK_")
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
    # How often webhook_audit's chain heads are signed (audit_checkpoints).
    audit_checkpoint_interval_seconds: float = Field(30.0, gt=0)

    @field_validator("retry_schedule")
    @classmethod
    def _schedule_is_seconds(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts or any(not p.replace(".", "", 1).isdigit() for p in parts):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE: comma-separated seconds, e.g. 0,5,300")
        return value
