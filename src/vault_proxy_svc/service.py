"""Wiring: the one place where vault_proxy_svc's adapters are built and handed to the servicer."""

from __future__ import annotations

from pathlib import Path

import grpc

from paymesh.platform.config import VaultSettings
from paymesh.platform.server import Resources, ServiceDefinition
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from vault_proxy_svc import tables
from vault_proxy_svc.repository import PaymentMethodRepository
from vault_proxy_svc.servicer import VaultServicer


def register(server: grpc.aio.Server, resources: Resources) -> None:
    servicer = VaultServicer(PaymentMethodRepository(resources.engine))
    vault_pb2_grpc.add_VaultServiceServicer_to_server(servicer, server)


DEFINITION = ServiceDefinition(
    name="vault",
    schema=tables.SCHEMA,
    grpc_services=(vault_pb2.DESCRIPTOR.services_by_name["VaultService"].full_name,),
    settings_class=VaultSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
)
