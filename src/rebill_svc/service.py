"""Wiring: the one place where rebill_svc's adapters are built and handed to the servicers.
Besides the API, every rebill_svc process is a scheduler candidate (one leads), moves dead
letters into their table, and reads the queues' depth; one signs rebill_audit's chain heads."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import grpc

from paymesh.platform.amqp_consumer import Consumer
from paymesh.platform.audit_checkpoints import AuditCheckpointer
from paymesh.platform.audit_keys import AuditKeys
from paymesh.platform.channels import close_on_shutdown, service_channel
from paymesh.platform.idempotency.store import Idempotency
from paymesh.platform.merchant_auth import remote_callers
from paymesh.platform.outbox import ApiObject
from paymesh.platform.server import Resources, ServiceDefinition
from paymesh.rebill.v1 import rebill_admin_pb2, rebill_admin_pb2_grpc, rebill_pb2, rebill_pb2_grpc
from rebill_svc import tables
from rebill_svc.admin import RebillAdminServicer
from rebill_svc.charging import GatewayCharger
from rebill_svc.config import RebillSettings
from rebill_svc.dead_letters import DeadLetters
from rebill_svc.jobs.postgres import PostgresJobStore
from rebill_svc.oversight import SubscriptionOversight
from rebill_svc.repository import SubscriptionRepository
from rebill_svc.runner import JobRunner, Leases
from rebill_svc.scheduler import Scheduler, watch_workforce
from rebill_svc.servicer import (
    PaymentMethods,
    RebillServicer,
    renewal_message,
    subscription_message,
)
from rebill_svc.topology import DEAD_QUEUE, declare_queues
from rebill_svc.workforce import Workforce


async def register(server: grpc.aio.Server, resources: Resources) -> list:
    settings = resources.settings
    assert isinstance(settings, RebillSettings)
    callers, gateway_channel = remote_callers(
        settings.gateway_addr, resources.token_issuer, resources.token_verifier
    )
    vault_channel = service_channel(settings.vault_addr, resources.token_issuer, "vault")
    audit_keys = AuditKeys.load(settings.key_store())
    audit_checkpoints = AuditCheckpointer(
        resources.engine,
        f"{tables.SCHEMA}.{tables.rebill_audit.name}",
        audit_keys,
        settings.audit_checkpoint_interval_seconds,
        session_engine=resources.session_engine,
    )
    jobs = PostgresJobStore(resources.engine, resources.direct_sql)
    runner = JobRunner(
        jobs,
        GatewayCharger(gateway_channel),
        f"api:{socket.gethostname()}:{os.getpid()}",
        Leases(settings.lease_seconds, settings.recheck_seconds),
    )
    key_secret = resources.token_issuer.derived_secret("rebill-idempotency-keys")
    servicer = RebillServicer(
        SubscriptionRepository(resources.engine, jobs, resources.read_engine),
        callers,
        PaymentMethods(vault_channel),
        runner,
        Idempotency(
            resources.engine, resources.direct_sql, tables.idempotency_keys, lambda: key_secret
        ),
    )
    rebill_pb2_grpc.add_RebillServiceServicer_to_server(servicer, server)
    letters = DeadLetters(resources.engine)
    rebill_admin_pb2_grpc.add_RebillAdminServiceServicer_to_server(
        RebillAdminServicer(
            resources.engine, letters, callers, SubscriptionOversight(resources.engine, audit_keys)
        ),
        server,
    )
    workforce = Workforce(resources.engine)
    scheduler = Scheduler(
        resources.session_engine,
        jobs,
        batch_size=settings.scheduler_batch_size,
        idle_seconds=settings.scheduler_idle_seconds,
        requeue_after=settings.requeue_after_seconds,
        workforce=workforce,
        lease_seconds=settings.lease_seconds,
    )
    # Declares the whole rebill topology at each (re)connection, not once at startup: the
    # service starts while the broker is down, and a broker back without its data is mended.
    dead_letter_consumer = Consumer(
        settings.amqp_url,
        [DEAD_QUEUE],
        letters.receive,
        prefetch=10,
        declare_on=lambda channel: declare_queues(channel, settings.events_exchange),
    )
    return [
        close_on_shutdown(gateway_channel),
        close_on_shutdown(vault_channel),
        scheduler.run(),
        dead_letter_consumer.run(),
        watch_workforce(workforce, settings.amqp_url, settings.lease_seconds),
        audit_checkpoints.run(),
    ]


# Events carry these as GET /v1/subscriptions/{id} and GET /v1/renewals/{id} answer them (a
# renewal is a period's job).
EVENT_OBJECTS = {
    "subscription": ApiObject(
        tables.subscriptions, lambda row: subscription_message(SimpleNamespace(**row))
    ),
    "rebill_job": ApiObject(
        tables.rebill_jobs, lambda row: renewal_message(SimpleNamespace(**row))
    ),
}

DEFINITION = ServiceDefinition(
    name="rebill",
    package="rebill_svc",
    schema=tables.SCHEMA,
    grpc_services=(
        rebill_pb2.DESCRIPTOR.services_by_name["RebillService"].full_name,
        rebill_admin_pb2.DESCRIPTOR.services_by_name["RebillAdminService"].full_name,
    ),
    settings_class=RebillSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
    event_objects=EVENT_OBJECTS,
)
