"""Wiring: the one place where gateway_svc's adapters are built and handed to the servicer."""

from __future__ import annotations

from pathlib import Path

import grpc

from gateway_svc import tables
from gateway_svc.repository import PaymentIntentRepository
from gateway_svc.servicer import GatewayServicer
from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paymesh.platform.config import GatewaySettings
from paymesh.platform.server import Resources, ServiceDefinition


def register(server: grpc.aio.Server, resources: Resources) -> None:
    servicer = GatewayServicer(PaymentIntentRepository(resources.engine))
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)


DEFINITION = ServiceDefinition(
    name="gateway",
    schema=tables.SCHEMA,
    grpc_services=(gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,),
    settings_class=GatewaySettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
)
