"""Dependency health: probes PostgreSQL and RabbitMQ on an interval and mirrors the result
into grpc.health.v1 (overall "" and each service name) and /readyz."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import structlog
from grpc_health.v1 import health, health_pb2

from paymesh.platform.metrics import DEPENDENCY_UP

log = structlog.get_logger(__name__)

Probe = Callable[[], Awaitable[object]]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DependencyMonitor:
    """Runs every probe each `interval` seconds; a probe that raises or times out is down."""

    def __init__(
        self,
        service: str,
        probes: dict[str, Probe],
        servicer: health.aio.HealthServicer,
        service_names: Iterable[str],
        interval: float = 2.0,
        probe_timeout: float = 3.0,
    ):
        self._service = service
        self._probes = probes
        self._servicer = servicer
        self._service_names = ["", *service_names]
        self._interval = interval
        self._probe_timeout = probe_timeout
        self.failures: dict[str, str] = {name: "not probed yet" for name in probes}
        self._serving: bool | None = None

    @property
    def ready(self) -> bool:
        return not self.failures

    async def check_once(self) -> bool:
        results = await asyncio.gather(
            *(self._probe(name, probe) for name, probe in self._probes.items())
        )
        self.failures = {name: error for name, error in results if error is not None}
        serving = not self.failures
        if serving != self._serving:
            self._serving = serving
            log.info("health_changed", serving=serving, failures=self.failures)
            status = SERVING if serving else NOT_SERVING
            for name in self._service_names:
                await self._servicer.set(name, status)
        return serving

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # a probe bug must not kill health reporting
                log.exception("health_check_failed")
            await asyncio.sleep(self._interval)

    async def _probe(self, name: str, probe: Probe) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(probe(), self._probe_timeout)
        except Exception as error:  # noqa: BLE001 - any failure means "down"
            DEPENDENCY_UP.labels(self._service, name).set(0)
            return name, f"{type(error).__name__}: {error}"[:200]
        DEPENDENCY_UP.labels(self._service, name).set(1)
        return name, None
