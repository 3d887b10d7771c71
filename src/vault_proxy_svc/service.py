"""Wiring: the one place where vault_proxy_svc's adapters are built and handed to the servicer."""

from __future__ import annotations

from pathlib import Path

import grpc

from paymesh.platform.channels import close_on_shutdown
from paymesh.platform.idempotency.store import Idempotency
from paymesh.platform.merchant_auth import remote_callers
from paymesh.platform.outbox import ApiObject
from paymesh.platform.server import Resources, ServiceDefinition
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from vault_proxy_svc import tables
from vault_proxy_svc.config import VaultSettings
from vault_proxy_svc.cvc_store import CvcStore
from vault_proxy_svc.kek import KekManager
from vault_proxy_svc.keys import build_key_provider
from vault_proxy_svc.models import PaymentMethod
from vault_proxy_svc.postgres_card_store import PostgresCardStore
from vault_proxy_svc.psp import SandboxCards, StripeCards
from vault_proxy_svc.revocations import GatewayRevocations
from vault_proxy_svc.servicer import (
    VaultInternalServicer,
    VaultServicer,
    payment_method_message,
)
from vault_proxy_svc.vault import Vault


async def register(server: grpc.aio.Server, resources: Resources) -> list:
    settings = resources.settings
    assert isinstance(settings, VaultSettings)
    keys = build_key_provider(settings)
    keks = KekManager(resources.engine, keys)
    psp_keys = settings.psp_keys()
    psps = {
        "stripe": StripeCards(settings.stripe_api_base, psp_keys["stripe"]),
        "sandbox": SandboxCards(settings.sandbox_api_base, psp_keys["sandbox"]),
    }
    callers, gateway_channel = remote_callers(
        settings.gateway_addr, resources.token_issuer, resources.token_verifier
    )
    vault = Vault(
        PostgresCardStore(resources.engine, resources.direct_sql),
        keys,
        keks,
        psps,
        CvcStore(settings.cvc_ttl_seconds),
        GatewayRevocations(gateway_channel),
    )
    idempotency = Idempotency(
        resources.engine,
        resources.direct_sql,
        tables.idempotency_keys,
        lambda: keks.fingerprint_secret,
    )
    vault_pb2_grpc.add_VaultServiceServicer_to_server(
        VaultServicer(vault, callers, idempotency), server
    )
    vault_pb2_grpc.add_VaultInternalServiceServicer_to_server(
        VaultInternalServicer(vault, callers), server
    )

    await keks.ensure_ready()  # the primary KEK and the fingerprint secret, before any call

    async def keep_keys_current() -> None:
        try:
            await keks.run_rewrap(settings.rewrap_batch_size, settings.rewrap_interval_seconds)
        finally:
            for psp in psps.values():
                await psp.close()

    return [
        close_on_shutdown(gateway_channel),
        keep_keys_current(),
        *(key.refresh(settings.secrets_refresh_seconds) for key in psp_keys.values()),
    ]


# Events carry a card as GET /v1/payment_methods/{id} answers it.
EVENT_OBJECTS = {
    "payment_method": ApiObject(
        tables.payment_methods, lambda row: payment_method_message(PaymentMethod.of(row))
    )
}

DEFINITION = ServiceDefinition(
    name="vault",
    package="vault_proxy_svc",
    schema=tables.SCHEMA,
    grpc_services=(
        vault_pb2.DESCRIPTOR.services_by_name["VaultService"].full_name,
        vault_pb2.DESCRIPTOR.services_by_name["VaultInternalService"].full_name,
    ),
    settings_class=VaultSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
    event_objects=EVENT_OBJECTS,
)
