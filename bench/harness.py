"""Shared by the benchmarks: a mesh of its own (fresh database, vhost and free ports), a
closed-loop load driver, the report format, and the machine's own reference: a Python
grpc.aio echo (server in its own process, 32 calls in flight), so that each figure also reads
as a ratio to what this machine's Python gRPC does at all, comparable across machines."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

# The developer tools (dev/, beside bench/) are not installed: the repository root holds them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dev.devinfra import Infra, create_infra, drop_infra  # noqa: E402
from dev.devmesh import DEFAULT_GATEWAY_PROCESSES, Mesh, Ports, service_of  # noqa: E402

BIN = Path(sys.executable).parent
ECHO_METHOD = "/bench.Echo/Echo"
# calls/s of the echo reference, once `machine_reference()` has measured it.
reference_rate: float | None = None


async def _serve_echo(port: int) -> None:
    import grpc

    async def echo(request: bytes, _context) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def machine_reference(seconds: float = 3.0, concurrency: int = 32) -> float:
    """Measures the echo reference (calls/s) and prints it; later rows show their ratio to it."""
    import grpc

    global reference_rate
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "echo-server", str(port)])

    async def make():
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        call = channel.unary_unary(ECHO_METHOD)
        await channel.channel_ready()

        async def send() -> bool:
            return await call(b"x" * 100) == b"x" * 100

        return send

    try:
        asyncio.run(closed_loop("echo", 4, 0.5, make))  # warm-up
        measured = closed_loop("machine reference: grpc echo", concurrency, seconds, make)
        result = asyncio.run(measured)
    finally:
        server.terminate()
        server.wait()
    print(result.row(), flush=True)
    reference_rate = result.requests / result.seconds
    return reference_rate


@dataclass(frozen=True)
class Bench:
    mesh: Mesh
    infra: Infra
    secret_key: str  # a test-mode merchant key
    merchant_id: str


def mesh_arguments(description: str | None, concurrency: str) -> argparse.ArgumentParser:
    """The options of a benchmark that runs a mesh and records its rows: --seconds,
    --concurrency, --json-out and --gateway-processes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default=concurrency)
    parser.add_argument(
        "--json-out",
        default=os.environ.get("BENCH_JSON_OUT"),
        help="append each row to this file as a JSON line (bench/summary.py reads them)",
    )
    parser.add_argument(
        "--gateway-processes",
        type=int,
        default=DEFAULT_GATEWAY_PROCESSES,
        help="gateway processes behind Envoy (the gRPC rows reach the first one only)",
    )
    return parser


@contextlib.contextmanager
def running_mesh(
    gateway_processes: int = DEFAULT_GATEWAY_PROCESSES,
    extra_env: dict[str, str] | None = None,
    env_of: Callable[[Infra], dict[str, str]] | None = None,
) -> Iterator[Bench]:
    """A mesh with a fresh database, vhost, service keys, keyring and one merchant, and
    `gateway_processes` gateway processes behind Envoy; `extra_env` adds settings, `env_of`
    settings that depend on the fresh database (its URL through a pooler, say)."""
    infra = create_infra("paymesh_bench")
    log_dir = Path(tempfile.mkdtemp(prefix="paymesh-bench-"))
    mesh = None
    try:
        ports = Ports.free(gateway_processes)
        env = {
            **os.environ,
            **ports.service_env(),
            "DATABASE_URL": infra.database_url,
            "AMQP_URL": infra.amqp_url,
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            "PAYMESH_KEYS_DIR": str(log_dir / "keys"),
            "VAULT_KEYRING_FILE": str(log_dir / "vault-keyring.json"),
            **(extra_env or {}),
            **(env_of(infra) if env_of else {}),
        }
        os.environ["PAYMESH_KEYS_DIR"] = env["PAYMESH_KEYS_DIR"]
        for step in (["migrate"], ["keys", "init"], ["vault", "init-keyring"]):
            subprocess.run([str(BIN / "paymesh"), *step], env=env, check=True, capture_output=True)
        merchant = json.loads(
            subprocess.run(
                [str(BIN / "paymesh"), "merchants", "create", "--name", "bench"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        mesh = Mesh(env=env, ports=ports, log_dir=log_dir)
        mesh.start_all(timeout=90)
        yield Bench(mesh, infra, merchant["secret_key"], merchant["id"])
    finally:
        if mesh is not None:
            mesh.stop()
        drop_infra(infra)


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(mesh: Mesh, others: dict[str, int] | None = None) -> dict[str, float]:
    """CPU seconds used so far by each process of the mesh (`gateway:<pid>`: every gateway
    process counts as `gateway`), by each of PostgreSQL's and RabbitMQ's processes on the
    machine (`postgresql:<pid>`), by this load generator, and by the `others` (name: pid)."""
    used = {
        f"{service_of(name)}:{process.pid}": _cpu_of(process.pid)
        for name, process in mesh.processes.items()
    }
    shared = {"postgres": "postgresql", "beam.smp": "rabbitmq"}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                command = (entry / "comm").read_text().strip()
                if command in shared:
                    used[f"{shared[command]}:{entry.name}"] = _cpu_of(int(entry.name))
    used["load generator"] = sum(os.times()[:2])
    for name, pid in (others or {}).items():
        used[f"{name}:{pid}"] = _cpu_of(pid)
    return used


def cpu_per_request(
    before: dict[str, float], after: dict[str, float], requests: int, unit: str = "request"
) -> str:
    """CPU ms per request (or per `unit`) by process, largest first, and in all. A process
    that started in between counts whole; one that ended in between (a closed database
    connection) is lost."""
    spent: dict[str, float] = {}
    for key, seconds in after.items():
        name = key.split(":")[0]
        spent[name] = spent.get(name, 0.0) + (seconds - before.get(key, 0.0)) * 1e3 / requests
    parts = [f"{name} {ms:.2f}" for name, ms in sorted(spent.items(), key=lambda i: -i[1])]
    return f"  CPU ms per {unit}: {', '.join(parts)}; total {sum(spent.values()):.2f}"


# The hops of a request as the services count them on /metrics: family → (the report's name
# for it, the labels that split it).
_HOP_COUNTERS = {
    "gateway_requests": ("gRPC", ("service", "method")),  # calls served
    "outbox_events_published": ("published", ("service",)),  # messages the relays sent RabbitMQ
    "psp_request_duration_seconds": ("PSP call", ("psp", "operation")),  # the gateway's (count)
    "webhook_psp_events": ("PSP webhook", ("outcome",)),  # what webhook_svc received
}


def hop_counts(bench: Bench) -> dict[str, float]:
    """What the mesh's requests have cost so far in hops: the counters of _HOP_COUNTERS summed
    over every service's /metrics, and the database's transactions (`pg_stat_database`; every
    autocommit statement is one). PostgreSQL publishes a backend's counts up to a second after
    its transaction, so a short window reads a little low."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for port in bench.mesh.ports.ops_ports():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:  # noqa: S310
                text = answer.read().decode()
        except OSError:
            continue  # a process without an ops port (an extra rebill worker)
        for family in text_string_to_metric_families(text):
            if family.name not in _HOP_COUNTERS:
                continue
            title, labels = _HOP_COUNTERS[family.name]
            for sample in family.samples:
                if sample.name.endswith(("_total", "_count")):
                    row = f"{title} {'.'.join(sample.labels.get(k, '') for k in labels)}"
                    counts[row] = counts.get(row, 0.0) + sample.value
    with psycopg.connect(bench.infra.database_url, autocommit=True) as db:
        counts["PostgreSQL transactions"] = db.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()[0]
    return counts


def hops_per_request(
    before: dict[str, float], after: dict[str, float], requests: int, unit: str = "request"
) -> str:
    """The hop counters' growth per request (per `unit`), largest first; those under 0.01
    (health checks) left out."""
    grown = {
        name: (value - before.get(name, 0.0)) / requests
        for name, value in after.items()
        if value - before.get(name, 0.0) >= 0.01 * requests
    }
    parts = [f"{name} {n:.2f}" for name, n in sorted(grown.items(), key=lambda i: -i[1])]
    return f"  hops per {unit}: {', '.join(parts)}"


class KeepAliveHttp:
    """One keep-alive HTTP/1.1 connection. Minimal on purpose: the load generator shares the
    cores with the mesh."""

    def __init__(self, port: int, headers: dict[str, str]):
        self._port = port
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader = self._writer = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """`headers`: this request's own, beside the connection's."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{self._headers}"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + body)
        response_head = await self._reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in response_head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        return int(response_head.split()[1]), await self._reader.readexactly(length)


def http_sender(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""):
    """A factory of senders of one fixed request; each send returns True on a 200."""

    async def make():
        http = KeepAliveHttp(port, headers)

        async def send() -> bool:
            status, _ = await http.request(method, path, body)
            return status == 200

        return send

    return make


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
        rate = self.requests / self.seconds
        ratio = f"  {rate / reference_rate:5.3f}× echo" if reference_rate else ""
        return (
            f"{self.name:<30} c={self.concurrency:<3} {rate:>8.0f}/s"
            f"  p50 {q[49]:6.2f} ms  p95 {q[94]:6.2f} ms  p99 {q[98]:6.2f} ms"
            f"  errors {self.errors}{ratio}"
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


if __name__ == "__main__" and sys.argv[1:2] == ["echo-server"]:
    asyncio.run(_serve_echo(int(sys.argv[2])))
