"""Wiring: the one place where webhook_svc's adapters are built and handed to the servicer.
Besides the API, every webhook_svc process takes domain events from RabbitMQ and delivers
them (replicas share both)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import grpc

from paymesh.platform.amqp_consumer import Consumer
from paymesh.platform.channels import close_on_shutdown
from paymesh.platform.merchant_auth import remote_callers
from paymesh.platform.outbox import ApiObject
from paymesh.platform.server import Resources, ServiceDefinition
from paymesh.webhook.v1 import (
    event_stream_pb2,
    event_stream_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
)
from webhook_svc import tables
from webhook_svc.config import WebhookSettings
from webhook_svc.deliverer import Deliverer, DeliveryPolicy, Sender
from webhook_svc.destinations import AddressPolicy
from webhook_svc.endpoints import EndpointStore
from webhook_svc.event_stream import EventStreamServicer
from webhook_svc.events import EventIntake, EventStore
from webhook_svc.inbound import SERVICE_NAME as PSP_WEBHOOK_SERVICE
from webhook_svc.inbound import register_inbound
from webhook_svc.rules import parse_schedule
from webhook_svc.secret_box import SecretBox
from webhook_svc.servicer import WebhookServicer, endpoint_message
from webhook_svc.topology import EVENTS_QUEUE, declare_queues


async def register(server: grpc.aio.Server, resources: Resources) -> list:
    settings = resources.settings
    assert isinstance(settings, WebhookSettings)
    callers, gateway_channel = remote_callers(
        settings.gateway_addr, resources.token_issuer, resources.token_verifier
    )
    issuer = resources.token_issuer
    endpoints = EndpointStore(
        resources.engine,
        SecretBox(issuer.derived_secret("webhook-signing-secrets")),
        issuer.derived_secret("webhook-idempotency-keys"),
    )
    destinations = AddressPolicy(settings.allowed_networks.split(","))
    servicer = WebhookServicer(endpoints, EventStore(resources.engine), callers, destinations)
    webhook_pb2_grpc.add_WebhookServiceServicer_to_server(servicer, server)
    event_stream_pb2_grpc.add_EventStreamServiceServicer_to_server(
        EventStreamServicer(resources.engine, callers), server
    )
    inbound = register_inbound(server, resources)  # PSP webhooks in

    intake = EventIntake(resources.direct_sql)
    # Declares the queue at each (re)connection: a broker back without its data is mended.
    consumer = Consumer(
        settings.amqp_url,
        [EVENTS_QUEUE],
        intake.receive,
        prefetch=500,
        declare_on=lambda channel: declare_queues(channel, settings.events_exchange),
    )
    policy = DeliveryPolicy(
        schedule=parse_schedule(settings.retry_schedule),
        timeout_seconds=settings.delivery_timeout_seconds,
        max_in_flight=settings.max_in_flight,
        per_endpoint=settings.endpoint_concurrency,
        breaker_fail_max=settings.breaker_fail_max,
        breaker_reset_seconds=settings.breaker_reset_seconds,
        disable_after_seconds=settings.disable_after_seconds,
    )
    sender = Sender(destinations, settings.delivery_timeout_seconds, "paymesh-webhooks/1")
    deliverer = Deliverer(resources.engine, endpoints, sender, policy, tables.outbox)
    return [close_on_shutdown(gateway_channel), consumer.run(), deliverer.run(), *inbound]


def _shown_endpoint(row: dict) -> webhook_pb2.WebhookEndpoint:
    return endpoint_message(SimpleNamespace(**row), public_key=row["public_key"])


# Events carry an endpoint as GET /v1/webhook_endpoints/{id} answers it.
EVENT_OBJECTS = {"webhook_endpoint": ApiObject(tables.webhook_endpoints, _shown_endpoint)}

DEFINITION = ServiceDefinition(
    name="webhook",
    package="webhook_svc",
    schema=tables.SCHEMA,
    grpc_services=(
        webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
        event_stream_pb2.DESCRIPTOR.services_by_name["EventStreamService"].full_name,
        PSP_WEBHOOK_SERVICE,
    ),
    settings_class=WebhookSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
    event_objects=EVENT_OBJECTS,
)
