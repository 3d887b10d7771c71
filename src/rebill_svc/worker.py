"""A rebill worker: `python -m rebill_svc.worker`. Run any number, anywhere.

It consumes the four rebill queues (prefetch-bounded, manual acks) and runs each message's
job through JobRunner under a lease it heartbeats; the message is acked only once the outcome
is committed. A message it cannot read, or one naming no job, is rejected to `rebill.dead`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys

import structlog
from pydantic import ValidationError

from paymesh.platform import audit_details
from paymesh.platform.amqp_consumer import Consumer, Delivery, Verdict
from paymesh.platform.channels import service_channel
from paymesh.platform.db import create_engine, named
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.http import OpsHttpServer
from paymesh.platform.logging import configure_logging
from paymesh.platform.service_auth import TokenIssuer
from paymesh.platform.tracing import configure_tracing
from rebill_svc.charging import GatewayCharger
from rebill_svc.config import RebillSettings
from rebill_svc.jobs.postgres import PostgresJobStore
from rebill_svc.jobs.store import JobStore
from rebill_svc.metrics import HEARTBEAT_AGE, JOBS_FAILED
from rebill_svc.runner import JobRunner, Leases
from rebill_svc.topology import JOB_QUEUES, declare_queues, job_id_of
from rebill_svc.workforce import Workforce

log = structlog.get_logger(__name__)

# Before a message goes back to its queue after a failure of ours (the database is down):
# RabbitMQ counts each return towards the delivery limit, so do not burn them at once.
REQUEUE_DELAY_SECONDS = 1.0


class Worker:
    def __init__(self, runner: JobRunner, jobs: JobStore):
        self._runner = runner
        self._jobs = jobs

    async def handle(self, delivery: Delivery) -> Verdict:
        job_id = job_id_of(delivery.body)
        if job_id is None:
            JOBS_FAILED.labels("malformed_message").inc()
            log.warning("rebill_message_malformed", queue=delivery.queue)
            return Verdict.REJECT
        try:
            ran = await self._runner.run(job_id)
            if not ran and not await self._jobs.exists(job_id):
                JOBS_FAILED.labels("unknown_job").inc()
                log.warning("rebill_unknown_job", job_id=job_id)
                return Verdict.REJECT
        except Exception as error:  # noqa: BLE001 - ours, not the message's: later
            log.warning("rebill_job_error", job_id=job_id, error=f"{type(error).__name__}: {error}")
            JOBS_FAILED.labels("worker_error").inc()
            await asyncio.sleep(REQUEUE_DELAY_SECONDS)
            return Verdict.REQUEUE
        finally:
            structlog.contextvars.clear_contextvars()
        return Verdict.ACK


async def beat_registry(workforce: Workforce, owner: str, interval: float) -> None:
    """This worker's row in rebill_workers, beaten while it runs (rebill_workers_alive)."""
    while True:
        try:
            await workforce.beat(owner)
        except Exception as error:  # noqa: BLE001 - the database is down: the beat lapses
            log.warning("rebill_worker_registry_beat_failed", error=type(error).__name__)
        await asyncio.sleep(interval)


async def serve(settings: RebillSettings) -> None:
    tracer_provider = configure_tracing("rebill-worker", settings.otlp_endpoint)
    # Claims and settles, one each per job, run on the direct pool; the engine serves the
    # heartbeats and the odd unknown-job check.
    engine = create_engine(
        named(settings.database_url, "rebill_worker"),
        4,
        keep=1,
        prepare=settings.prepared_statements,
    )
    direct_sql = DirectSql(
        engine,
        settings.worker_prefetch + 2,
        prepare=settings.prepared_statements,
        max_idle=settings.db_pool_idle_seconds,
    )
    channel = service_channel(
        settings.gateway_addr, TokenIssuer("rebill", settings.key_store()), audience="gateway"
    )
    jobs = PostgresJobStore(engine, direct_sql)
    owner = f"worker:{socket.gethostname()}:{os.getpid()}"
    runner = JobRunner(
        jobs,
        GatewayCharger(channel),
        owner,
        Leases(settings.lease_seconds, settings.recheck_seconds),
    )
    # This worker's own jobs; rebill_svc's leader reports the stalest of every worker's.
    HEARTBEAT_AGE.set_function(runner.heartbeat_age)
    workforce = Workforce(engine)
    registered = asyncio.create_task(beat_registry(workforce, owner, settings.lease_seconds / 3))
    consumer = Consumer(
        settings.amqp_url,
        JOB_QUEUES,
        Worker(runner, jobs).handle,
        settings.worker_prefetch,
        declare_on=lambda channel: declare_queues(channel, settings.events_exchange),
    )
    ops_http = ops_http_server(
        settings, lambda: {} if consumer.connected.is_set() else {"rabbitmq": "not consuming"}
    )
    if ops_http is not None:
        ops_http.start()
    consuming = asyncio.create_task(consumer.run())
    log.info(
        "rebill_worker_started",
        owner=owner,
        prefetch=settings.worker_prefetch,
        http_port=ops_http.port if ops_http else None,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("draining", grace_seconds=settings.shutdown_grace_seconds)
    await consumer.stop(settings.shutdown_grace_seconds)
    consuming.cancel()
    registered.cancel()
    await asyncio.gather(consuming, registered, return_exceptions=True)
    with contextlib.suppress(Exception):  # a worker that cannot say goodbye ages out
        await workforce.leave(owner)
    await channel.close()
    await direct_sql.close()
    await engine.dispose()
    if ops_http is not None:
        ops_http.stop()
    tracer_provider.shutdown()
    log.info("stopped")


class PortInUse(Exception):
    pass


def ops_http_server(settings: RebillSettings, readiness) -> OpsHttpServer | None:
    """The worker's ops HTTP port (/metrics). Any number of workers may run on one host: when
    REBILL_WORKER_HTTP_PORT was not set and its default is taken (by the first worker), this
    one takes a free port and logs it; a port that was set and is taken is an error naming it."""
    if not settings.worker_http_port:
        return None
    try:
        return OpsHttpServer(settings.bind_host, settings.worker_http_port, readiness)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        if "worker_http_port" in settings.model_fields_set:
            raise PortInUse(
                f"port {settings.worker_http_port} (REBILL_WORKER_HTTP_PORT) is in use: set "
                "REBILL_WORKER_HTTP_PORT to a free port, or leave it unset to take any free one"
            ) from None
    server = OpsHttpServer(settings.bind_host, 0, readiness)
    log.info(
        "rebill_worker_http_port_taken",
        default_port=settings.worker_http_port,
        http_port=server.port,
        hint="another worker has the default port; REBILL_WORKER_HTTP_PORT sets one",
    )
    return server


def main() -> None:
    try:
        settings = RebillSettings()
    except ValidationError as error:
        configure_logging("rebill-worker")
        log.error("bad_settings", errors=[e["msg"] for e in error.errors()])
        sys.exit(2)
    configure_logging("rebill-worker", settings.log_level)
    audit_details.configure(settings.audit_compress_above_bytes)
    try:
        asyncio.run(serve(settings))
    except (OSError, PortInUse) as error:
        log.error("startup_failed", error=str(error))
        sys.exit(1)


if __name__ == "__main__":
    main()
