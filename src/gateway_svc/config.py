"""The gateway's settings: the ones every service shares (ServiceSettings) and its own."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from paymesh.platform.config import ServiceSettings, database_url_field, psp_keys
from paymesh.platform.secrets import RotatingSecret


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")
    database_url: str = database_url_field("GATEWAY_")
    grpc_port: int = 50051
    http_port: int = 9101
    stripe_api_base: str = Field("http://127.0.0.1:8420", validation_alias="STRIPE_API_BASE")
    # PSP API keys, when PAYMESH_SECRETS_SOURCE is env (development defaults); otherwise read
    # as `stripe-secret-key` and `sandbox-secret-key` from the secret source.
    stripe_secret_key: str = Field("sk_test_paymesh_dev", validation_alias="STRIPE_SECRET_KEY")
    sandbox_api_base: str = Field("http://127.0.0.1:8430", validation_alias="SANDBOX_API_BASE")
    sandbox_secret_key: str = Field("sk_sandbox_paymesh_dev", validation_alias="SANDBOX_SECRET_KEY")
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
    # An idempotency key held by a request that died (its caller gone mid-call) answers
    # `idempotency_key_in_use` for this long; then a retry may take it over. Unset: the
    # recovery sweep's wait, which already outlasts any confirm.
    idempotency_stale_seconds: float | None = None
    # How often payment_audit's chain heads are signed (audit_checkpoints): newer rows are not
    # anchored yet.
    audit_checkpoint_interval_seconds: float = Field(30.0, gt=0)
    # Reconciliation on a schedule (in one gateway process): each PSP of the list, over the
    # last day, once this long has passed since its last successful run (0: never on its own).
    reconciliation_interval_seconds: float = Field(3600.0, ge=0)
    reconciliation_psps: str = "sandbox,stripe"
    # One page of a PSP's listing, or one lookup, may take this long.
    reconciliation_timeout_seconds: float = Field(30.0, gt=0)

    @property
    def idempotency_stale_after(self) -> float:
        if self.idempotency_stale_seconds is None:
            return self.recovery_after_seconds
        return self.idempotency_stale_seconds

    def psp_keys(self) -> dict[str, RotatingSecret]:
        return psp_keys(
            self, {"stripe": self.stripe_secret_key, "sandbox": self.sandbox_secret_key}
        )

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
        if self.idempotency_stale_after <= longest_confirm:
            raise ValueError(
                f"GATEWAY_IDEMPOTENCY_STALE_SECONDS must exceed {longest_confirm:g} s "
                "(a confirm still running must not be taken over)"
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
