"""Shared by the benchmarks: a mesh of its own (fresh database, vhost and free ports), a
closed-loop load driver and the report format."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from paymesh.devinfra import Infra, create_infra, drop_infra
from paymesh.devmesh import Mesh, Ports

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def running_mesh() -> Iterator[tuple[Mesh, Infra]]:
    infra = create_infra("paymesh_bench")
    log_dir = Path(tempfile.mkdtemp(prefix="paymesh-bench-"))
    mesh = None
    try:
        subprocess.run(
            [str(BIN / "paymesh"), "migrate"],
            env={**os.environ, "DATABASE_URL": infra.database_url},
            check=True,
            capture_output=True,
        )
        ports = Ports.free()
        env = {
            **os.environ,
            **ports.service_env(),
            "DATABASE_URL": infra.database_url,
            "AMQP_URL": infra.amqp_url,
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        }
        mesh = Mesh(env=env, ports=ports, log_dir=log_dir)
        mesh.start_all(timeout=90)
        yield mesh, infra
    finally:
        if mesh is not None:
            mesh.stop()
        drop_infra(infra)


@dataclass
class Result:
    name: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    def row(self) -> str:
        q = (
            statistics.quantiles(self.latencies_ms, n=100)
            if len(self.latencies_ms) > 1
            else [0] * 99
        )
        return (
            f"{self.name:<28} c={self.concurrency:<3} {self.requests / self.seconds:>8.0f}/s"
            f"  p50 {q[49]:6.2f} ms  p95 {q[94]:6.2f} ms  p99 {q[98]:6.2f} ms"
            f"  errors {self.errors}"
        )


async def closed_loop(
    name: str,
    concurrency: int,
    seconds: float,
    make_worker: Callable[[], Awaitable[Callable[[], Awaitable[bool]]]],
) -> Result:
    """`concurrency` workers, each sending its next request when the last one answered."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker():
        nonlocal errors
        send = await make_worker()
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            ok = await send()
            latencies.append((time.perf_counter() - started) * 1e3)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(
        name, concurrency, len(latencies), errors, time.perf_counter() - started, latencies
    )
