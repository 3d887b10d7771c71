"""Wiring: the one place where webhook_svc's adapters are built and handed to the servicer.
Besides the API, every webhook_svc process takes domain events from RabbitMQ and delivers
them (replicas share both)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import grpc

from paymesh.gateway.v1 import psp_events_pb2_grpc
from paymesh.platform.amqp_consumer import Consumer
from paymesh.platform.audit_checkpoints import AuditCheckpointer
from paymesh.platform.audit_keys import AuditKeys
from paymesh.platform.channels import close_on_shutdown, service_channel
from paymesh.platform.idempotency.store import Idempotency
from paymesh.platform.merchant_auth import remote_callers
from paymesh.platform.notifications import listen
from paymesh.platform.outbox import ApiObject
from paymesh.platform.server import Resources, ServiceDefinition
from paymesh.webhook.v1 import (
    event_stream_pb2,
    event_stream_pb2_grpc,
    psp_webhook_pb2,
    psp_webhook_pb2_grpc,
    webhook_admin_pb2,
    webhook_admin_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
)
from webhook_svc import tables
from webhook_svc.config import WebhookSettings
from webhook_svc.domain.rules import parse_schedule
from webhook_svc.inbound.gateway import GATEWAY_TIMEOUT_SECONDS, GatewayEvents
from webhook_svc.inbound.inbox import Inbox
from webhook_svc.inbound.recorded import RecordedSuccesses
from webhook_svc.inbound.servicer import PspWebhookServicer
from webhook_svc.outbound.admin_servicer import WebhookAdminServicer
from webhook_svc.outbound.admin_store import DeliveryAdmin
from webhook_svc.outbound.deliverer import Deliverer, DeliveryPolicy
from webhook_svc.outbound.delivery_store import PostgresDeliveryStore
from webhook_svc.outbound.destinations import AddressPolicy
from webhook_svc.outbound.endpoints import EndpointStore
from webhook_svc.outbound.event_stream import EventStreamServicer
from webhook_svc.outbound.events import WAKE_CHANNEL, EventIntake, EventStore
from webhook_svc.outbound.secret_box import SecretBox
from webhook_svc.outbound.sender import Sender
from webhook_svc.outbound.servicer import WebhookServicer, endpoint_message
from webhook_svc.outbound.topology import EVENTS_QUEUE, declare_queues


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
        resources.read_engine,
    )
    destinations = AddressPolicy(settings.allowed_networks.split(","))
    key_secret = issuer.derived_secret("webhook-idempotency-keys")
    keys = Idempotency(
        resources.engine, resources.direct_sql, tables.idempotency_keys, lambda: key_secret
    )
    servicer = WebhookServicer(
        endpoints,
        EventStore(resources.engine, lists=resources.read_engine),
        callers,
        destinations,
        keys,
    )
    webhook_pb2_grpc.add_WebhookServiceServicer_to_server(servicer, server)
    event_stream_pb2_grpc.add_EventStreamServiceServicer_to_server(
        EventStreamServicer(resources.engine, callers), server
    )
    webhook_admin_pb2_grpc.add_WebhookAdminServiceServicer_to_server(
        WebhookAdminServicer(DeliveryAdmin(resources.engine), callers), server
    )
    recorded = RecordedSuccesses(resources.direct_sql)
    inbound = _register_inbound(server, resources, recorded)  # PSP webhooks in

    intake = EventIntake(resources.direct_sql, successes_stored=recorded.arrived)
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
    store = PostgresDeliveryStore(
        resources.engine, tables.outbox, endpoints.public_key_of, EndpointStore.SECRET_COLUMNS
    )
    deliverer = Deliverer(
        store,
        sender.post,
        lambda due: endpoints.signing_secrets(
            due.endpoint_id,
            due.secret,
            due.previous_secret,
            due.previous_secret_expires_at,
            due.now,
        ),
        policy,
    )

    async def deliver() -> None:
        try:
            await deliverer.run(
                lambda woken: listen(resources.session_engine, WAKE_CHANNEL, woken, woken)
            )
        finally:
            await sender.close()

    audit_checkpoints = AuditCheckpointer(
        resources.engine,
        f"{tables.SCHEMA}.{tables.webhook_audit.name}",
        AuditKeys.load(settings.key_store()),
        settings.audit_checkpoint_interval_seconds,
        session_engine=resources.session_engine,
    )
    return [
        close_on_shutdown(gateway_channel),
        consumer.run(),
        deliver(),
        audit_checkpoints.run(),
        *inbound,
    ]


def _register_inbound(
    server: grpc.aio.Server, resources: Resources, recorded: RecordedSuccesses
) -> list:
    """Adds PspWebhookService to the server; the background jobs it needs."""
    settings = resources.settings
    assert isinstance(settings, WebhookSettings)
    channel = service_channel(settings.gateway_addr, resources.token_issuer, "gateway")
    servicer = PspWebhookServicer(
        Inbox(resources.direct_sql),
        GatewayEvents(psp_events_pb2_grpc.PspEventServiceStub(channel), GATEWAY_TIMEOUT_SECONDS),
        psp_secrets(settings),
        settings.psp_signature_tolerance_seconds,
        recorded,
    )
    psp_webhook_pb2_grpc.add_PspWebhookServiceServicer_to_server(servicer, server)
    return [close_on_shutdown(channel)]


def psp_secrets(settings: WebhookSettings) -> dict[str, list[str]]:
    """Each PSP's endpoint secrets (comma-separated: a secret being rolled, and the new one)."""
    return {
        "stripe": [s.strip() for s in settings.stripe_secret.split(",") if s.strip()],
        "sandbox": [s.strip() for s in settings.sandbox_secret.split(",") if s.strip()],
    }


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
        psp_webhook_pb2.DESCRIPTOR.services_by_name["PspWebhookService"].full_name,
        webhook_admin_pb2.DESCRIPTOR.services_by_name["WebhookAdminService"].full_name,
    ),
    settings_class=WebhookSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
    event_objects=EVENT_OBJECTS,
)
