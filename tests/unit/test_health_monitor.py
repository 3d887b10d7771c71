"""Health plumbing: the dependency monitor mirrors probe results into grpc.health.v1 for the
overall status and each service name.

grpc_testing has no grpc.aio support (grpc/grpc#24942), so these tests drive the real aio
HealthServicer directly, with fake probes and no sockets."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

from paymesh.platform.health import NOT_SERVING, SERVING, DependencyMonitor

SERVICE = "paymesh.test.v1.TestService"


class FakeProbe:
    def __init__(self):
        self.up = True
        self.calls = 0

    async def __call__(self):
        self.calls += 1
        if not self.up:
            raise ConnectionRefusedError("connection refused")


class Hanging:
    async def __call__(self):
        await asyncio.sleep(60)


async def status_of(servicer: health.aio.HealthServicer, name: str) -> int:
    reply = await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
    return reply.status


def test_all_probes_up_means_serving_overall_and_per_service():
    async def scenario():
        servicer = health.aio.HealthServicer()
        monitor = DependencyMonitor("test", {"db": FakeProbe()}, servicer, [SERVICE])

        assert await monitor.check_once() is True
        assert await status_of(servicer, "") == SERVING
        assert await status_of(servicer, SERVICE) == SERVING
        assert monitor.ready and monitor.failures == {}

    asyncio.run(scenario())


def test_one_probe_down_means_not_serving_and_names_the_dependency():
    async def scenario():
        servicer = health.aio.HealthServicer()
        db, broker = FakeProbe(), FakeProbe()
        monitor = DependencyMonitor("test", {"db": db, "broker": broker}, servicer, [SERVICE])
        await monitor.check_once()

        broker.up = False
        assert await monitor.check_once() is False

        assert await status_of(servicer, "") == NOT_SERVING
        assert await status_of(servicer, SERVICE) == NOT_SERVING
        assert list(monitor.failures) == ["broker"]
        assert "connection refused" in monitor.failures["broker"]

        broker.up = True
        assert await monitor.check_once() is True
        assert await status_of(servicer, SERVICE) == SERVING

    asyncio.run(scenario())


def test_a_probe_that_hangs_counts_as_down_after_its_timeout():
    async def scenario():
        servicer = health.aio.HealthServicer()
        monitor = DependencyMonitor(
            "test", {"db": Hanging()}, servicer, [SERVICE], probe_timeout=0.05
        )

        assert await asyncio.wait_for(monitor.check_once(), 1) is False
        assert "TimeoutError" in monitor.failures["db"]

    asyncio.run(scenario())


def test_the_run_loop_recovers_within_one_interval():
    async def scenario():
        servicer = health.aio.HealthServicer()
        db = FakeProbe()
        db.up = False
        monitor = DependencyMonitor("test", {"db": db}, servicer, [SERVICE], interval=0.01)
        task = asyncio.create_task(monitor.run())
        try:
            await asyncio.sleep(0.05)
            assert await status_of(servicer, "") == NOT_SERVING
            db.up = True
            await asyncio.sleep(0.05)
            assert await status_of(servicer, "") == SERVING
        finally:
            task.cancel()

    asyncio.run(scenario())
