"""The lifecycle every service shares: build the gRPC server with health, reflection,
interceptors and the ops HTTP port; run the dependency monitor and the outbox relay; drain on
SIGTERM (health flips to NOT_SERVING, in-flight calls get a grace period, then connections
close)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError
from sqlalchemy import Table, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform import audit_details
from paymesh.platform.amqp import ConfirmingPublisher
from paymesh.platform.config import ServiceSettings
from paymesh.platform.db import autocommit, create_engine, create_session_engine, named, ping
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.health import NOT_SERVING, DependencyMonitor
from paymesh.platform.http import OpsHttpServer
from paymesh.platform.interceptors import ServerInterceptor
from paymesh.platform.logging import configure_logging
from paymesh.platform.outbox import ApiObject, OutboxRelay
from paymesh.platform.service_auth import TokenIssuer, TokenVerifier
from paymesh.platform.tls import MutualTls
from paymesh.platform.tracing import configure_tracing, server_interceptor

log = structlog.get_logger(__name__)

# Request metadata every service takes: twice what the edge lets through (Envoy's
# max_request_headers_kb), so no call that Envoy forwards is refused for its headers.
METADATA_SOFT_LIMIT = 16 * 1024
METADATA_HARD_LIMIT = 20 * 1024


class StartupRefused(Exception):
    """A service must not start; the message says why and what to do, in one line."""


@dataclass(frozen=True)
class Resources:
    """What a service's wiring function may hand to its servicer."""

    settings: ServiceSettings
    engine: AsyncEngine
    direct_sql: DirectSql  # the same database, for statements on the hot path
    # List reads: DATABASE_READ_URL's replica if set, else `engine` itself. It may lag the
    # primary: nothing that must be fresh (idempotency, a state change) reads it.
    read_engine: AsyncEngine
    publisher: ConfirmingPublisher
    token_issuer: TokenIssuer
    token_verifier: TokenVerifier
    # Straight to PostgreSQL (DATABASE_DIRECT_URL), for session state: advisory locks, LISTEN.
    session_engine: AsyncEngine


# A service's wiring: adds its servicers to the server, does what must be done before the
# first call, and returns the background jobs it needs (run until shutdown, then cancelled).
Register = Callable[[grpc.aio.Server, Resources], Awaitable[list[Coroutine[Any, Any, None]]]]


@dataclass(frozen=True)
class ServiceDefinition:
    """A service's place in the mesh, declared by the service itself: the kit and the tools
    above it know a service only through this."""

    name: str  # its identity: service tokens, certificates, logs, `paymesh migrate NAME`
    package: str  # what `python -m` starts
    schema: str
    grpc_services: tuple[str, ...]
    settings_class: type[ServiceSettings]
    migrations_dir: Path
    outbox: Table
    register: Register
    # The kinds of object its events are about, by aggregate type: how the API shows each.
    event_objects: Mapping[str, ApiObject] = field(default_factory=dict)


async def ping_pools(engine: AsyncEngine, direct_sql: DirectSql) -> None:
    """PostgreSQL through both pools: a connection that broke while idle (a database restart)
    is found by the probe, and its pool's others replaced, before a call meets it."""
    await ping(engine)
    await direct_sql.ping()


async def _bind(
    server: grpc.aio.Server, address: str, tls: MutualTls | None, attempts: int = 20
) -> None:
    # Our default ports lie in Linux's ephemeral range, so a short-lived outgoing connection
    # may hold one for a moment: retry for a few seconds before giving up.
    for attempt in range(attempts):
        try:
            if tls is None:
                server.add_insecure_port(address)
            else:
                server.add_secure_port(address, tls.server_credentials())
            return
        except RuntimeError:
            if attempt == attempts - 1:
                raise OSError(f"cannot listen on {address}: address in use") from None
            await asyncio.sleep(0.5)


async def warn_if_superuser(engine: AsyncEngine, settings_class: type[ServiceSettings]) -> None:
    """Logs `database_role_is_superuser` once when the service's database role is a superuser:
    it works, but then nothing keeps the audit tables append-only (a superuser may switch
    their triggers off). Says nothing when the database cannot be reached now."""
    try:
        async with autocommit(engine).connect() as connection:
            row = (
                await connection.execute(
                    text("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user")
                )
            ).one()
    except (OSError, SQLAlchemyError):
        return
    if row.rolsuper:
        variable = f"{settings_class.model_config.get('env_prefix', '')}DATABASE_URL"
        log.warning(
            "database_role_is_superuser",
            role=row.rolname,
            hint=f"set {variable} to the URL of the service's own role, which `paymesh "
            "migrate` creates (README, Configuration)",
        )


def run(definition: ServiceDefinition) -> None:
    """Entry point of `python -m <service>`."""
    try:
        settings = definition.settings_class()
    except ValidationError as error:  # a bad setting: say which, no traceback
        configure_logging(definition.name)
        log.error("bad_settings", errors=[e["msg"] for e in error.errors()])
        sys.exit(2)
    configure_logging(definition.name, settings.log_level)
    try:
        asyncio.run(serve(definition, settings))
    except (OSError, OperationalError, StartupRefused) as error:  # busy port, no keys, …: one line
        log.error("startup_failed", error=str(error))
        sys.exit(1)


async def serve(definition: ServiceDefinition, settings: ServiceSettings) -> None:
    audit_details.configure(settings.audit_compress_above_bytes)
    tracer_provider = configure_tracing(definition.name, settings.otlp_endpoint)
    engine = create_engine(
        named(settings.database_url, definition.name),
        settings.db_pool_size,
        keep=settings.db_pool_keep,
        prepare=settings.prepared_statements,
    )
    direct_sql = DirectSql(
        engine,
        settings.db_pool_size,
        prepare=settings.prepared_statements,
        max_idle=settings.db_pool_idle_seconds,
    )
    read_engine = (
        create_engine(
            named(settings.database_read_url, f"{definition.name}:read"),
            max(2, settings.db_pool_size // 2),
            keep=settings.db_pool_keep,
            prepare=settings.prepared_statements,
        )
        if settings.database_read_url
        else engine
    )
    session_engine = create_session_engine(
        named(settings.session_database_url, f"{definition.name}:session")
    )
    publisher = ConfirmingPublisher(settings.amqp_url, settings.events_exchange)

    server = grpc.aio.server(
        interceptors=[server_interceptor(), ServerInterceptor(definition.name)],
        options=[
            # gRPC enables SO_REUSEPORT by default: a second process would silently share the
            # port.
            ("grpc.so_reuseport", 0),
            # The edge lets in 8 KiB of headers and Envoy adds its own. gRPC's defaults refuse
            # some of the calls between 8 and 16 KiB of metadata, at random.
            ("grpc.max_metadata_size", METADATA_SOFT_LIMIT),
            ("grpc.absolute_max_metadata_size", METADATA_HARD_LIMIT),
        ],
    )
    keys = settings.key_store()
    resources = Resources(
        settings,
        engine,
        direct_sql,
        read_engine,
        publisher,
        TokenIssuer(definition.name, keys),
        TokenVerifier(definition.name, keys),
        session_engine,
    )
    jobs = await definition.register(server, resources)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*definition.grpc_services, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"{settings.bind_host}:{settings.grpc_port}"
    tls = MutualTls.load(settings.tls_dir, definition.name) if settings.tls_dir else None
    await _bind(server, address, tls)
    for name in ("", *definition.grpc_services):
        await health_servicer.set(name, NOT_SERVING)

    monitor = DependencyMonitor(
        definition.name,
        {"postgresql": lambda: ping_pools(engine, direct_sql), "rabbitmq": publisher.ping},
        health_servicer,
        definition.grpc_services,
        interval=settings.health_probe_interval_seconds,
    )
    draining = False

    def readiness() -> dict[str, str]:
        return {"service": "draining"} if draining else monitor.failures

    ops_http = OpsHttpServer(settings.bind_host, settings.http_port, readiness)
    relay = OutboxRelay(
        definition.name,
        engine,
        definition.outbox,
        publisher,
        definition.event_objects,
        session_engine=session_engine,
    )

    publisher.start()
    await server.start()
    ops_http.start()
    background = [
        asyncio.create_task(monitor.run(), name="health-monitor"),
        asyncio.create_task(relay.run(), name="outbox-relay"),
        asyncio.create_task(
            warn_if_superuser(engine, definition.settings_class), name="database-role-check"
        ),
        *(asyncio.create_task(job) for job in jobs),
    ]
    log.info(
        "service_started",
        grpc_address=address,
        grpc_tls="mtls" if tls else "plaintext",
        http_port=settings.http_port,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info(
        "draining",
        delay_seconds=settings.shutdown_drain_delay_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
    draining = True
    background[0].cancel()
    await health_servicer.enter_graceful_shutdown()
    await asyncio.sleep(settings.shutdown_drain_delay_seconds)
    await server.stop(settings.shutdown_grace_seconds)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await publisher.stop()
    await direct_sql.close()
    await engine.dispose()
    if read_engine is not engine:
        await read_engine.dispose()
    await session_engine.dispose()
    ops_http.stop()
    tracer_provider.shutdown()
    log.info("stopped")
