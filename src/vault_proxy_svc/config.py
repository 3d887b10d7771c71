"""The vault's settings: the ones every service shares (ServiceSettings) and its own."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from paymesh.platform.config import ServiceSettings, database_url_field, psp_keys
from paymesh.platform.secrets import RotatingSecret


class VaultSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_")
    database_url: str = database_url_field("VAULT_")
    grpc_port: int = 50052
    http_port: int = 9102
    # Key-encryption keys: `local` (a keyring file, for dev and tests) or `aws-kms`.
    kms_provider: Literal["local", "aws-kms"] = "local"
    keyring_file: Path = Path("var/vault-keyring.json")
    # AWS KMS (boto3); the endpoint points at moto's server in tests.
    aws_kms_endpoint: str | None = None
    # How many cards one re-wrap round moves to the primary KEK, and how often it runs.
    rewrap_batch_size: int = 200
    rewrap_interval_seconds: float = 5.0
    # A CVC waits in memory (never on disk) for the first authorization at most this long.
    cvc_ttl_seconds: float = 300.0
    stripe_api_base: str = Field("http://127.0.0.1:8420", validation_alias="STRIPE_API_BASE")
    # PSP API keys, when PAYMESH_SECRETS_SOURCE is env (development defaults); otherwise read
    # as `stripe-secret-key` and `sandbox-secret-key` from the secret source.
    stripe_secret_key: str = Field("sk_test_paymesh_dev", validation_alias="STRIPE_SECRET_KEY")
    sandbox_api_base: str = Field("http://127.0.0.1:8430", validation_alias="SANDBOX_API_BASE")
    sandbox_secret_key: str = Field("sk_sandbox_paymesh_dev", validation_alias="SANDBOX_SECRET_KEY")

    def psp_keys(self) -> dict[str, RotatingSecret]:
        return psp_keys(
            self, {"stripe": self.stripe_secret_key, "sandbox": self.sandbox_secret_key}
        )
