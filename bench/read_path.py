"""Read-path benchmark: GET a payment intent through Envoy (REST, keep-alive) and straight to
gateway_svc over gRPC, at several concurrencies (issue 9's row: 32 in flight).

The reads go to many distinct intents, each GET the next in turn: `--intents` of them
(default 1000), made first through the gateway itself as a merchant's would be: most
succeeded, one in five authorized for a manual capture, one in ten declined (so it carries
a `last_payment_error`), each with a description and metadata.

    make bench            # or: .venv/bin/python bench/read_path.py --seconds 10
    .venv/bin/python bench/read_path.py --concurrency 1,16,32 --json-out build/bench.jsonl

Starts a mesh of its own (fresh database and vhost, free ports) and stops it afterwards.
The load generator shares the machine's cores with the mesh; read the figures as such."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from harness import (  # noqa: E402
    KeepAliveHttp,
    closed_loop,
    cpu_per_request,
    cpu_seconds,
    machine_reference,
    mesh_arguments,
    running_mesh,
)
from summary import record  # noqa: E402

from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402

APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"  # the sandbox PSP's generic_decline
# Unavailable, or the first attempt under the same key still in progress: retry later.
RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)


async def tokenize(port: int, secret_key: str, number: str) -> str:
    http = KeepAliveHttp(port, {"Authorization": f"Bearer {secret_key}"})
    card = {"number": number, "exp_month": 12, "exp_year": datetime.now(UTC).year + 2}
    body = json.dumps({"card": {**card, "cvc": "123"}}).encode()
    status, answer = await http.request("POST", "/v1/payment_methods", body)
    assert status == 200, answer
    return json.loads(answer)["id"]


async def create_intents(bench, channel, count: int, in_flight: int = 16) -> list[str]:
    """`count` intents through CreatePaymentIntent (confirmed), in a merchant's mix."""
    port = bench.mesh.ports.envoy
    approved = await tokenize(port, bench.secret_key, APPROVED_CARD)
    declined = await tokenize(port, bench.secret_key, DECLINED_CARD)
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    auth = ("authorization", f"Bearer {bench.secret_key}")
    run = os.urandom(4).hex()
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> str:
        request = gateway_pb2.CreatePaymentIntentRequest(
            amount=500 + 37 * i,
            currency="usd",
            payment_method=declined if i % 10 == 9 else approved,
            confirm=True,
            capture_method="manual" if i % 5 == 0 else "automatic",
            description=f"order {100000 + i}",
            metadata={"order_id": str(100000 + i), "channel": "web"},
        )
        # As a merchant would: an Idempotency-Key, retried under it while unavailable or busy.
        metadata = (auth, ("idempotency-key", f"bench-read-{run}-{i}"))
        async with gate:
            for attempt in range(8):
                try:
                    return (
                        await stub.CreatePaymentIntent(request, metadata=metadata, timeout=30)
                    ).id
                except grpc.aio.AioRpcError as error:
                    if error.code() not in RETRY or attempt == 7:
                        raise
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def rest_reader(port: int, secret_key: str, intents):
    """GETs through Envoy, the next intent of the shared cycle on each request."""

    async def make():
        http = KeepAliveHttp(port, {"Authorization": f"Bearer {secret_key}"})

        async def send() -> bool:
            status, _ = await http.request("GET", f"/v1/payment_intents/{next(intents)}")
            return status == 200

        return send

    return make


def grpc_reader(channel, secret_key: str, intents):
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    metadata = (("authorization", f"Bearer {secret_key}"),)

    async def make():
        async def send() -> bool:
            request = gateway_pb2.GetPaymentIntentRequest(id=next(intents))
            try:
                await stub.GetPaymentIntent(request, timeout=5, metadata=metadata)
            except grpc.aio.AioRpcError:
                return False
            return True

        return send

    return make


async def run(bench, args) -> None:
    mesh = bench.mesh
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}")
    intents = itertools.cycle(await create_intents(bench, channel, args.intents))
    scenarios = (
        ("GET intent via Envoy REST", rest_reader(mesh.ports.envoy, bench.secret_key, intents)),
        ("GetPaymentIntent gRPC", grpc_reader(channel, bench.secret_key, intents)),
    )
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    for name, make in scenarios:
        await closed_loop(name, 4, 1.0, make)  # warm-up: connections, pools, caches
        for concurrency in concurrencies:
            before = cpu_seconds(mesh)
            result = await closed_loop(name, concurrency, args.seconds, make)
            cpu = cpu_per_request(before, cpu_seconds(mesh), result.requests)
            record(result, cpu, args.json_out, gateways=len(mesh.ports.gateways))
    await channel.close()


def main() -> None:
    parser = mesh_arguments(__doc__, "1,16,32,64")
    parser.add_argument("--intents", type=int, default=1000, help="distinct intents to read")
    args = parser.parse_args()
    machine_reference()
    with running_mesh(args.gateway_processes) as bench:
        asyncio.run(run(bench, args))


if __name__ == "__main__":
    main()
