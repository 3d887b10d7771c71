"""Wiring: the one place where gateway_svc's adapters are built and handed to the servicer."""

from __future__ import annotations

from pathlib import Path

import grpc

from gateway_svc import tables
from gateway_svc.merchants import MerchantRepository
from gateway_svc.repository import PaymentIntentRepository
from gateway_svc.servicer import GatewayServicer, MerchantAuthServicer
from paymesh.gateway.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    merchant_auth_pb2,
    merchant_auth_pb2_grpc,
)
from paymesh.platform.callers import CachedApiKeyVerifier, Callers
from paymesh.platform.config import GatewaySettings
from paymesh.platform.server import Resources, ServiceDefinition


async def register(server: grpc.aio.Server, resources: Resources) -> list:
    api_keys = CachedApiKeyVerifier(MerchantRepository(resources.engine))
    callers = Callers(api_keys, resources.token_verifier)
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
        GatewayServicer(PaymentIntentRepository(resources.engine), callers), server
    )
    merchant_auth_pb2_grpc.add_MerchantAuthServiceServicer_to_server(
        MerchantAuthServicer(api_keys, callers), server
    )
    return []


DEFINITION = ServiceDefinition(
    name="gateway",
    schema=tables.SCHEMA,
    grpc_services=(
        gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
        merchant_auth_pb2.DESCRIPTOR.services_by_name["MerchantAuthService"].full_name,
    ),
    settings_class=GatewaySettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
)
