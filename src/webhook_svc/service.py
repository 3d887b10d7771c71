"""Wiring: the one place where webhook_svc's adapters are built and handed to the servicer."""

from __future__ import annotations

from pathlib import Path

import grpc

from paymesh.platform.channels import close_on_shutdown
from paymesh.platform.config import WebhookSettings
from paymesh.platform.merchant_auth import remote_callers
from paymesh.platform.server import Resources, ServiceDefinition
from paymesh.webhook.v1 import webhook_pb2, webhook_pb2_grpc
from webhook_svc import tables
from webhook_svc.repository import WebhookEndpointRepository
from webhook_svc.servicer import WebhookServicer


async def register(server: grpc.aio.Server, resources: Resources) -> list:
    callers, gateway_channel = remote_callers(
        resources.settings.gateway_addr, resources.token_issuer, resources.token_verifier
    )
    servicer = WebhookServicer(WebhookEndpointRepository(resources.engine), callers)
    webhook_pb2_grpc.add_WebhookServiceServicer_to_server(servicer, server)
    return [close_on_shutdown(gateway_channel)]


DEFINITION = ServiceDefinition(
    name="webhook",
    schema=tables.SCHEMA,
    grpc_services=(webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,),
    settings_class=WebhookSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
)
