"""Rebill's settings: the ones every service shares (ServiceSettings) and its own."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from paymesh.platform.config import ServiceSettings, database_url_field


class RebillSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REBILL_")
    database_url: str = database_url_field("REBILL_")
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
