"""The floor: what each primitive a payment or a subscription renewal is built of costs on
this machine, alone, so that the least a renewal or an authorize can cost in this stack is a
sum of its primitives (so many gRPC calls, statements, transactions, messages, PSP calls and
one pass through Envoy).

    .venv/bin/python bench/floor.py --seconds 5 --concurrency 1,16
    .venv/bin/python bench/floor.py --only sql-insert,sql-tx --seconds 3

Each primitive runs closed-loop at each concurrency, after a warm-up, and prints its ops/s,
p50/p95/p99 and ratio to the machine's echo reference (as the other benchmarks do), then the
CPU milliseconds per op of each process, read from /proc: the client (this process; the
publisher for AMQP), the server (its own subprocess: the gRPC echo, the aiohttp server, the
AMQP consumer), PostgreSQL (every `postgres` process on the machine), RabbitMQ (every
`beam.smp`) and Envoy. A row's total counts the processes its primitive involves; the others
are shown in parentheses, with the rest of the machine's busy CPU: what others (a test run
beside it) spent meanwhile. The run's database and vhost are its own, dropped at the end.

Minimal on purpose: no TLS, no interceptors but the one row's pass-through, no access logs,
no metrics, one connection (gRPC, AMQP) or one pool (PostgreSQL, HTTP) per primitive shared
by its workers, as a service process shares its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import grpc
import pika
import psycopg
import yaml
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).parent))
from harness import (  # noqa: E402
    BIN,
    ECHO_METHOD,
    Result,
    closed_loop,
    cpu_seconds,
    machine_reference,
)

from paymesh.platform.amqp import Brokers, open_channel, step  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HARNESS = Path(__file__).parent / "harness.py"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WARMUP_SECONDS = 1.0
SEED_ROWS = 10_000  # rows `sql select by pk` picks from
ROLES = ("client", "server", "postgres", "rabbitmq", "envoy")
# cpu_seconds' names (before the ":pid") → the roles of the report.
ROLE_OF = {
    "load generator": "client",
    "server": "server",
    "postgresql": "postgres",
    "rabbitmq": "rabbitmq",
    "envoy": "envoy",
}
# cpu_seconds reads a mesh's processes; these primitives run no mesh.
NO_MESH = SimpleNamespace(processes={})

GRPC_PAYLOAD = os.urandom(200)
CHARGE = {  # ~300 bytes of JSON, the size of a PSP authorize request
    "amount": 4200,
    "currency": "usd",
    "merchant": "acct_1Pq8ZkL3b9XwYt2R",
    "description": "Subscription renewal sub_1PqA2bL3b9XwYt2R, period 2024-07",
    "payment_method": "pm_card_visa_4242424242424242",
    "idempotency_key": "9b0f8d7e-0c4b-4a63-b0a5-6f1d9f3e2a11",
    "capture": True,
    "metadata": {"invoice": "in_1PqA2cL3b9XwYt2R", "attempt": "1"},
}
ANSWER = {  # ~300 bytes of JSON, the size of a PSP's answer
    "id": "ch_3PqA2dL3b9XwYt2R0x9Kq1Zb",
    "object": "charge",
    "amount": 4200,
    "amount_captured": 4200,
    "currency": "usd",
    "status": "succeeded",
    "paid": True,
    "captured": True,
    "balance_transaction": "txn_3PqA2dL3b9XwYt2R0n1Bc8Xe",
    "outcome": {"network_status": "approved_by_network", "type": "authorized"},
    "created": 1720000000,
}
ROW_BODY = {"currency": "usd", "description": CHARGE["description"], "metadata": CHARGE["metadata"]}
MERCHANTS = [f"acct_{i:04d}" for i in range(100)]

SCHEMA = """
CREATE TABLE floor_rows (
    id uuid PRIMARY KEY,
    merchant text NOT NULL,
    amount bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    body jsonb NOT NULL
);
CREATE INDEX floor_rows_merchant_created_at ON floor_rows (merchant, created_at);
CREATE TABLE floor_outbox (id bigserial PRIMARY KEY, topic text NOT NULL, payload jsonb NOT NULL);
CREATE TABLE floor_audit (
    id bigserial PRIMARY KEY,
    ref uuid NOT NULL,
    action text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
"""
INSERT_ROW = "INSERT INTO floor_rows (id, merchant, amount, body) VALUES ($1, $2, $3, $4)"
SELECT_ROW = "SELECT id, merchant, amount, created_at, body FROM floor_rows WHERE id = $1"
INSERT_OUTBOX = "INSERT INTO floor_outbox (topic, payload) VALUES ($1, $2)"
INSERT_AUDIT = "INSERT INTO floor_audit (ref, action) VALUES ($1, $2)"

# Primitive 8's service: the echo server's method, described so that Envoy can transcode it.
ECHO_PROTO = """syntax = "proto3";
package bench;
import "google/api/annotations.proto";
message Charge {
  int64 amount = 1;
  string currency = 2;
  string merchant = 3;
  string description = 4;
  string payment_method = 5;
  string idempotency_key = 6;
  bool capture = 7;
  map<string, string> metadata = 8;
}
service Echo {
  rpc Echo(Charge) returns (Charge) { option (google.api.http) = { post: "/v1/echo" body: "*" }; }
}
"""


@dataclass
class Target:
    """A primitive ready to run: closed_loop's worker factory, the roles whose CPU one op
    costs, and the pids of its own processes by role."""

    make: Callable[[], Awaitable[Callable[[], Awaitable[bool]]]]
    involves: tuple[str, ...]
    pids: dict[str, int]
    labels: dict[str, str] = field(default_factory=dict)  # a role's name in this row


class Shared:
    """The database (with its pool) and the vhost of the run, made on first use; the runner's
    exit stack removes them."""

    def __init__(self, stack: contextlib.AsyncExitStack, pool_size: int):
        self._stack = stack
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._amqp_url: str | None = None
        self.seeded_ids: list[uuid.UUID] = []

    async def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            url = self._stack.enter_context(database())
            with psycopg.connect(url, autocommit=True) as db:
                db.execute(SCHEMA)
                db.execute(
                    "INSERT INTO floor_rows (id, merchant, amount, body)"
                    " SELECT gen_random_uuid(), 'acct_' || lpad((i %% 100)::text, 4, '0'), i, %s"
                    " FROM generate_series(1, %s) AS i",
                    (Jsonb(ROW_BODY), SEED_ROWS),
                )
                db.execute("VACUUM ANALYZE floor_rows")
                self.seeded_ids = [row[0] for row in db.execute("SELECT id FROM floor_rows")]
            # As paymesh.platform.direct_sql.DirectSql opens its pool, all connections up front.
            pool = AsyncConnectionPool(
                url,
                min_size=self._pool_size,
                max_size=self._pool_size,
                open=False,
                kwargs={
                    "autocommit": True,
                    "prepare_threshold": 0,
                    "row_factory": dict_row,
                    "cursor_factory": psycopg.AsyncRawCursor,
                },
            )
            await pool.open(wait=True)
            self._stack.push_async_callback(pool.close)
            self._pool = pool
        return self._pool

    def amqp_url(self) -> str:
        if self._amqp_url is None:
            self._amqp_url = self._stack.enter_context(vhost())
        return self._amqp_url


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A database of the run's own; its URL. Dropped on the way out, whatever happened."""
    name = f"floor_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            drop = "DROP DATABASE IF EXISTS {} WITH (FORCE)"
            admin.execute(sql.SQL(drop).format(sql.Identifier(name)))


@contextlib.contextmanager
def vhost() -> Iterator[str]:
    """A RabbitMQ vhost of the run's own; its AMQP URL. Deleted on the way out."""
    name = f"floor_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def spawned(argv: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """A server process, terminated (killed if it lingers) on the way out."""
    process = subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with code {process.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f} s")
        await asyncio.sleep(0.1)


def sender(send: Callable[[], Awaitable[bool]]):
    """closed_loop's worker factory for a send shared by every worker."""

    async def make():
        return send

    return make


# --- the primitives ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def grpc_unary(_shared: Shared, intercepted: bool = False) -> AsyncIterator[Target]:
    """One unary call of ~200 bytes each way on one shared channel to a grpc.aio server with a
    generic handler (harness's echo server, or this file's with a pass-through interceptor)."""
    port = free_port()
    if intercepted:
        argv = [sys.executable, __file__, "serve", "grpc-intercepted", str(port)]
    else:
        argv = [sys.executable, str(HARNESS), "echo-server", str(port)]
    with spawned(argv) as server:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            await asyncio.wait_for(channel.channel_ready(), 30)
            call = channel.unary_unary(ECHO_METHOD)

            async def send() -> bool:
                return await call(GRPC_PAYLOAD, timeout=10) == GRPC_PAYLOAD

            yield Target(sender(send), ("client", "server"), {"server": server.pid})
        finally:
            await channel.close()


def grpc_intercepted(shared: Shared):
    return grpc_unary(shared, intercepted=True)


def _row() -> tuple:
    return (uuid.uuid4(), random.choice(MERCHANTS), random.randint(100, 100_000), Jsonb(ROW_BODY))


@contextlib.asynccontextmanager
async def sql_insert(shared: Shared) -> AsyncIterator[Target]:
    """One autocommit INSERT (prepared) of a row with a ~160-byte jsonb body into a table with
    a uuid primary key and a secondary index: a pool checkout, one round trip, one commit."""
    pool = await shared.pool()

    async def send() -> bool:
        async with pool.connection() as db:
            return (await db.execute(INSERT_ROW, _row())).rowcount == 1

    yield Target(sender(send), ("client", "postgres"), {})


@contextlib.asynccontextmanager
async def sql_select(shared: Shared) -> AsyncIterator[Target]:
    """One prepared SELECT by primary key of an existing row (a random one of the seeded)."""
    pool = await shared.pool()
    ids = shared.seeded_ids

    async def send() -> bool:
        async with pool.connection() as db:
            cursor = await db.execute(SELECT_ROW, (random.choice(ids),))
            return await cursor.fetchone() is not None

    yield Target(sender(send), ("client", "postgres"), {})


@contextlib.asynccontextmanager
async def sql_transaction(shared: Shared) -> AsyncIterator[Target]:
    """BEGIN; a row, its outbox message and its audit line; COMMIT: five round trips, one
    commit."""
    pool = await shared.pool()

    async def send() -> bool:
        row = _row()
        async with pool.connection() as db, db.transaction():
            await db.execute(INSERT_ROW, row)
            await db.execute(INSERT_OUTBOX, ("payment.succeeded", Jsonb(CHARGE)))
            await db.execute(INSERT_AUDIT, (row[0], "created"))
        return True

    yield Target(sender(send), ("client", "postgres"), {})


class ConsumedPublisher:
    """Publishes each message with a confirm, as paymesh.platform.amqp.ConfirmingPublisher
    does (one connection and one channel shared by every worker, a persistent message to a
    durable topic exchange), and waits for the confirm and for the consumer process to report
    it consumed and acked (one line on a pipe)."""

    exchange = "floor"

    def __init__(self, amqp_url: str, queue: str, queue_type: str):
        self._params = Brokers(amqp_url)
        self._queue = queue
        self._queue_type = queue_type
        self._channel = None
        self._connection = None
        self._closed: asyncio.Future | None = None
        self._confirms: dict[int, asyncio.Future] = {}
        self._consumed: dict[bytes, asyncio.Future] = {}
        self._tags = itertools.count(1)
        self._numbers = itertools.count()
        self._body = json.dumps(CHARGE).encode()

    async def open(self) -> None:
        queue = self._queue

        async def set_up(channel) -> None:
            await step(lambda cb: channel.confirm_delivery(self._on_confirm, callback=cb))
            await step(
                lambda cb: channel.exchange_declare(
                    self.exchange, exchange_type="topic", durable=True, callback=cb
                )
            )
            arguments = {"x-queue-type": self._queue_type}
            await step(
                lambda cb: channel.queue_declare(
                    queue, durable=True, arguments=arguments, callback=cb
                )
            )
            await step(lambda cb: channel.queue_bind(queue, self.exchange, queue, callback=cb))

        def remember(connection) -> None:
            self._connection = connection

        self._channel, self._closed = await open_channel(self._params, set_up, remember)

    async def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
            await asyncio.wait_for(self._closed, 10)

    async def read_consumed(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            future = self._consumed.pop(line.rstrip(), None)
            if future is not None and not future.done():
                future.set_result(True)

    async def send(self) -> bool:
        loop = asyncio.get_running_loop()
        number = str(next(self._numbers))
        confirmed, consumed = loop.create_future(), loop.create_future()
        self._confirms[next(self._tags)] = confirmed
        self._consumed[number.encode()] = consumed
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=number,
            type="payment.succeeded",
            timestamp=int(time.time()),
            headers={},
        )
        self._channel.basic_publish(self.exchange, self._queue, self._body, properties)
        try:
            acked, _ = await asyncio.wait_for(asyncio.gather(confirmed, consumed), 10)
        except TimeoutError:
            self._consumed.pop(number.encode(), None)
            return False
        return acked

    def _on_confirm(self, frame) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tags = (
            [t for t in self._confirms if t <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        for tag in tags:
            future = self._confirms.pop(tag, None)
            if future is not None and not future.done():
                future.set_result(acked)


@contextlib.asynccontextmanager
async def amqp(shared: Shared, queue_type: str) -> AsyncIterator[Target]:
    """A persistent ~300-byte message published with a confirm to a durable queue, consumed
    by another process (prefetch 100, one ack per message); one op ends when both the confirm
    and the consumer's report are in."""
    amqp_url = shared.amqp_url()
    queue = f"floor.{queue_type}"
    publisher = ConsumedPublisher(amqp_url, queue, queue_type)
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, __file__, "serve", "amqp-consumer", amqp_url, queue, str(write_fd)]
    try:
        await publisher.open()  # declares the exchange, the queue and its binding
        with spawned(argv, pass_fds=(write_fd,)) as consumer:
            os.close(write_fd)
            write_fd = -1
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=1 << 20)
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
            )
            read_fd = -1
            pump = None
            try:
                ready = await asyncio.wait_for(reader.readline(), 30)
                if ready != b"ready\n":
                    raise RuntimeError(f"the AMQP consumer did not start (exit {consumer.poll()})")
                pump = asyncio.create_task(publisher.read_consumed(reader))
                involves = ("client", "server", "rabbitmq")
                pids = {"server": consumer.pid}
                labels = {"client": "publisher", "server": "consumer"}
                yield Target(sender(publisher.send), involves, pids, labels)
            finally:
                if pump is not None:
                    pump.cancel()
                transport.close()
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        await publisher.close()


def amqp_quorum(shared: Shared):
    return amqp(shared, "quorum")


def amqp_classic(shared: Shared):
    return amqp(shared, "classic")


def _http_session() -> aiohttp.ClientSession:
    # As gateway_svc.psp.connectors opens its session to a PSP.
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=10),
        connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
    )


def _http_post(session: aiohttp.ClientSession, url: str, expect: str):
    async def send() -> bool:
        async with session.post(url, json=CHARGE) as response:
            answer = await response.json()
            return response.status == 200 and expect in answer

    return send


@contextlib.asynccontextmanager
async def http_post(_shared: Shared) -> AsyncIterator[Target]:
    """A ~300-byte JSON POST on a keep-alive aiohttp session, answered with ~300 bytes of JSON
    by a minimal aiohttp server (a PSP stand-in: its CPU would be the PSP's)."""
    port = free_port()
    with spawned([sys.executable, __file__, "serve", "http", str(port)]) as server:
        await wait_for_port(port, server)
        async with _http_session() as session:
            send = _http_post(session, f"http://127.0.0.1:{port}/v1/charges", "balance_transaction")
            yield Target(sender(send), ("client", "server"), {"server": server.pid})


def envoy_argv(config: dict, directory: Path, port: int) -> list[str]:
    """Envoy as dev.devmesh starts it: one worker thread, warnings only, its own base id."""
    path = directory / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return [
        str(BIN / "envoy"),
        "-c",
        str(path),
        "--concurrency",
        "1",
        "--log-level",
        "error",  # devmesh's is warn: here it would print a line per Envoy started and stopped
        "--base-id",
        str(port),
    ]


def typed(kind: str, **fields) -> dict:
    """The typed_config of Envoy's extension `kind` (its name after `envoy.extensions.`)."""
    return {"@type": f"type.googleapis.com/envoy.extensions.{kind}", **fields}


def envoy_config(port: int, upstream_port: int, filters: list[dict], http2: bool) -> dict:
    """One listener on `port` routing every request to 127.0.0.1:`upstream_port` through
    `filters` and the router; HTTP/2 upstream (gRPC) or HTTP/1.1."""

    def address(port: int) -> dict:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    endpoints = [{"lb_endpoints": [{"endpoint": {"address": address(upstream_port)}}]}]
    cluster = {
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "upstream", "endpoints": endpoints},
    }
    if http2:
        options = "upstreams.http.v3.HttpProtocolOptions"
        cluster["typed_extension_protocol_options"] = {
            f"envoy.extensions.{options}": typed(
                options, explicit_http_config={"http2_protocol_options": {}}
            )
        }
    route = {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}}
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": typed("filters.http.router.v3.Router"),
    }
    manager = typed(
        "filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="floor",
        route_config={"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        http_filters=[*filters, router],
    )
    listener = {
        "name": "floor",
        "address": address(port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    return {"static_resources": {"listeners": [listener], "clusters": [cluster]}}


def echo_descriptor(directory: Path) -> Path:
    """The descriptor set of ECHO_PROTO (with its imports), as tools/gen_protos.py builds
    paymesh's."""
    from grpc_tools import protoc

    (directory / "echo.proto").write_text(ECHO_PROTO)
    out = directory / "echo.pb"
    includes = [
        f"-I{directory}",
        f"-I{ROOT / 'third_party' / 'googleapis'}",
        f"-I{resources.files('grpc_tools') / '_proto'}",
    ]
    args = ["protoc", *includes, "--include_imports", f"--descriptor_set_out={out}", "echo.proto"]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on the echo service's descriptor")
    return out


@contextlib.asynccontextmanager
async def envoy_transcoding(_shared: Shared) -> AsyncIterator[Target]:
    """The ~300-byte JSON POST of `http post` through Envoy's grpc_json_transcoder (set as in
    envoy/envoy.yaml) to the gRPC echo server and back as JSON: the REST edge's own cost."""
    port, grpc_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="floor-envoy-") as directory:
        transcoder = {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": typed(
                "filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                proto_descriptor=str(echo_descriptor(Path(directory))),
                services=["bench.Echo"],
                convert_grpc_status=True,
                print_options={
                    "add_whitespace": False,
                    "always_print_primitive_fields": True,
                    "preserve_proto_field_names": True,
                },
                request_validation_options={"reject_unknown_method": True},
            ),
        }
        config = envoy_config(port, grpc_port, [transcoder], http2=True)
        with (
            spawned([sys.executable, str(HARNESS), "echo-server", str(grpc_port)]) as server,
            spawned(envoy_argv(config, Path(directory), port)) as envoy,
        ):
            await wait_for_port(grpc_port, server)
            await wait_for_port(port, envoy)
            async with _http_session() as session:
                send = _http_post(session, f"http://127.0.0.1:{port}/v1/echo", "idempotency_key")
                pids = {"server": server.pid, "envoy": envoy.pid}
                yield Target(sender(send), ("client", "server", "envoy"), pids)


@contextlib.asynccontextmanager
async def envoy_proxy(_shared: Shared) -> AsyncIterator[Target]:
    """`http post` through Envoy as a plain HTTP/1.1 → HTTP/1.1 proxy (no filter but the
    router): Envoy's cost of a request without transcoding."""
    port, http_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="floor-envoy-") as directory:
        config = envoy_config(port, http_port, [], http2=False)
        with (
            spawned([sys.executable, __file__, "serve", "http", str(http_port)]) as server,
            spawned(envoy_argv(config, Path(directory), port)) as envoy,
        ):
            await wait_for_port(http_port, server)
            await wait_for_port(port, envoy)
            async with _http_session() as session:
                url = f"http://127.0.0.1:{port}/v1/charges"
                send = _http_post(session, url, "balance_transaction")
                pids = {"server": server.pid, "envoy": envoy.pid}
                yield Target(sender(send), ("client", "server", "envoy"), pids)


# --option: (row name, primitive)
PRIMITIVES = {
    "grpc": ("grpc unary", grpc_unary),
    "grpc-interceptor": ("grpc unary + interceptor", grpc_intercepted),
    "sql-insert": ("sql autocommit insert", sql_insert),
    "sql-select": ("sql select by pk", sql_select),
    "sql-tx": ("sql transaction of 3 inserts", sql_transaction),
    "amqp-quorum": ("amqp quorum publish+consume", amqp_quorum),
    "amqp-classic": ("amqp classic publish+consume", amqp_classic),
    "http": ("http post (aiohttp)", http_post),
    "envoy-grpc": ("envoy rest→grpc transcoding", envoy_transcoding),
    "envoy-http": ("envoy http proxy, no transcode", envoy_proxy),
}


# --- the runner -------------------------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def snapshot(target: Target) -> tuple[dict[str, float], float]:
    others = {role: pid for role, pid in target.pids.items()}
    return cpu_seconds(NO_MESH, others), machine_busy()


def cpu_per_op(before, after, ops: int) -> dict[str, float]:
    """CPU ms per op by role, and `rest of machine`: what every other process spent."""
    spent = dict.fromkeys(ROLES, 0.0)
    for key, seconds in after[0].items():
        spent[ROLE_OF[key.split(":")[0]]] += (seconds - before[0].get(key, 0.0)) * 1e3 / ops
    spent["rest of machine"] = (after[1] - before[1]) * 1e3 / ops - sum(spent.values())
    return spent


def cpu_line(spent: dict[str, float], target: Target) -> str:
    parts = [
        f"{target.labels.get(role, role)} {spent[role]:.3f}"
        if role in target.involves
        else f"{role} ({spent[role]:.3f})"
        for role in ROLES
    ]
    total = sum(spent[role] for role in target.involves)
    return (
        f"  CPU ms per op: {'  '.join(parts)}  total {total:.3f}"
        f"  | rest of machine {spent['rest of machine']:.3f}"
    )


@dataclass
class Row:
    result: Result
    spent: dict[str, float]
    involves: tuple[str, ...]


async def until_ok(make, timeout: float = 30) -> None:
    """Until one op succeeds: servers accept connections before they are ready to answer."""
    send = await make()
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if await asyncio.wait_for(send(), 10):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no op succeeded after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def run_primitive(key: str, shared: Shared, concurrencies: list[int], seconds: float):
    name, primitive = PRIMITIVES[key]
    rows = []
    async with primitive(shared) as target:
        await until_ok(target.make)
        # Warm-up at the highest concurrency: every pooled connection opened, every statement
        # prepared on each, every code path run once.
        await closed_loop(name, max(concurrencies), WARMUP_SECONDS, target.make)
        for concurrency in concurrencies:
            before = snapshot(target)
            result = await closed_loop(name, concurrency, seconds, target.make)
            spent = cpu_per_op(before, snapshot(target), max(result.requests, 1))
            print(result.row(), flush=True)
            print(cpu_line(spent, target), flush=True)
            rows.append(Row(result, spent, target.involves))
    return rows


def print_floor(rows: list[Row], concurrency: int) -> None:
    print(f"\nfloor per op (CPU ms, all processes), c={concurrency}")
    print("  for AMQP rows the client is the publisher and the server the consumer;")
    print("  (x): a process the primitive does not involve, left out of its total")
    header = f"{'primitive':<31} {'ops/s':>8}" + "".join(f" {r:>10}" for r in ROLES)
    print(header + f" {'total':>8}")
    for row in rows:
        if row.result.concurrency != concurrency:
            continue
        result = row.result
        cells = "".join(
            f" {row.spent[r]:>10.3f}" if r in row.involves else f" {f'({row.spent[r]:.3f})':>10}"
            for r in ROLES
        )
        total = sum(row.spent[r] for r in row.involves)
        rate = result.requests / result.seconds
        print(f"{result.name:<31} {rate:>8.0f}{cells} {total:>8.3f}")


async def run(args, keys: list[str], concurrencies: list[int]) -> list[Row]:
    rows: list[Row] = []
    async with contextlib.AsyncExitStack() as stack:
        shared = Shared(stack, args.pool_size)
        for key in keys:
            rows += await run_primitive(key, shared, concurrencies, args.seconds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per row")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument(
        "--only", default="", help=f"comma-separated, of: {', '.join(PRIMITIVES)} (default: all)"
    )
    parser.add_argument(
        "--pool-size", type=int, default=10, help="PostgreSQL connections (DirectSql's default)"
    )
    args = parser.parse_args()
    names = {name: key for key, (name, _) in PRIMITIVES.items()}
    keys = [names.get(k.strip(), k.strip()) for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PRIMITIVES]
    if unknown:
        parser.error(f"unknown primitive(s): {', '.join(unknown)}; known: {', '.join(PRIMITIVES)}")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    # A SIGTERM unwinds like Ctrl-C: the database, the vhost and the servers go too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    machine_reference()
    rows = asyncio.run(run(args, keys or list(PRIMITIVES), concurrencies))
    print_floor(rows, 16 if 16 in concurrencies else max(concurrencies))


# --- the server processes ---------------------------------------------------------------


class PassThrough(grpc.aio.ServerInterceptor):
    """The shape of paymesh's ServerInterceptor without its metrics, logs and error mapping:
    each method's handler wrapped once, then per call a clock read, the metadata read and the
    behaviour awaited."""

    def __init__(self):
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self.seconds = 0.0  # in the handlers: where a duration metric would be observed

    async def intercept_service(self, continuation, details):
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = await continuation(details)
            behavior = handler.unary_unary

            async def handle(request, context):
                started = time.perf_counter()
                context.invocation_metadata()
                try:
                    return await behavior(request, context)
                finally:
                    self.seconds += time.perf_counter() - started

            wrapped = grpc.unary_unary_rpc_method_handler(
                handle,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            self._wrapped[details.method] = wrapped
        return wrapped


async def serve_grpc_intercepted(port: int) -> None:
    async def echo(request: bytes, _context) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server(interceptors=[PassThrough()])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def serve_http(port: int) -> None:
    from aiohttp import web

    async def charge(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({**ANSWER, "amount": body["amount"]})

    app = web.Application()
    app.router.add_post("/v1/charges", charge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def serve_amqp_consumer(amqp_url: str, queue: str, notify_fd: int) -> None:
    """Consumes `queue` (prefetch 100, an ack per message) and writes each message's id, one
    line each, to `notify_fd`: the ids of one turn of the event loop in one write."""
    loop = asyncio.get_running_loop()
    consumed: list[bytes] = []

    def report() -> None:
        os.write(notify_fd, b"".join(consumed))
        consumed.clear()

    def on_message(channel, method, properties, _body) -> None:
        channel.basic_ack(method.delivery_tag)
        if not consumed:
            loop.call_soon(report)
        consumed.append(properties.message_id.encode() + b"\n")

    async def set_up(channel) -> None:
        await step(lambda cb: channel.basic_qos(prefetch_count=100, callback=cb))
        await step(lambda cb: channel.basic_consume(queue, on_message, callback=cb))

    _channel, closed = await open_channel(Brokers(amqp_url), set_up, lambda _connection: None)
    os.write(notify_fd, b"ready\n")
    await closed


SERVERS = {
    "grpc-intercepted": lambda port: serve_grpc_intercepted(int(port)),
    "http": lambda port: serve_http(int(port)),
    "amqp-consumer": lambda url, queue, fd: serve_amqp_consumer(url, queue, int(fd)),
}

if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(SERVERS[sys.argv[2]](*sys.argv[3:]))
    else:
        main()
