"""Wiring: the one place where rebill_svc's adapters are built and handed to the servicer."""

from __future__ import annotations

from pathlib import Path

import grpc

from paymesh.platform.channels import close_on_shutdown
from paymesh.platform.config import RebillSettings
from paymesh.platform.merchant_auth import remote_callers
from paymesh.platform.server import Resources, ServiceDefinition
from paymesh.rebill.v1 import rebill_pb2, rebill_pb2_grpc
from rebill_svc import tables
from rebill_svc.repository import SubscriptionRepository
from rebill_svc.servicer import RebillServicer


async def register(server: grpc.aio.Server, resources: Resources) -> list:
    callers, gateway_channel = remote_callers(
        resources.settings.gateway_addr, resources.token_issuer, resources.token_verifier
    )
    servicer = RebillServicer(SubscriptionRepository(resources.engine), callers)
    rebill_pb2_grpc.add_RebillServiceServicer_to_server(servicer, server)
    return [close_on_shutdown(gateway_channel)]


DEFINITION = ServiceDefinition(
    name="rebill",
    schema=tables.SCHEMA,
    grpc_services=(rebill_pb2.DESCRIPTOR.services_by_name["RebillService"].full_name,),
    settings_class=RebillSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
)
