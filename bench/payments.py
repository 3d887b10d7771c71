"""Payments benchmark: payments per second and p50/p95/p99, through Envoy (REST) and straight
to gateway_svc over gRPC, at several concurrencies, sandbox PSP at 0 ms latency.

- `authorize`: create + confirm in one call, automatic capture (the NOTES' speed target).
- `create+confirm+capture`: create + confirm (manual capture), then capture: two calls.

    .venv/bin/python bench/payments.py --seconds 5 --concurrency 1,16,64

Starts a mesh of its own (fresh database, vhost, keys, free ports) and stops it afterwards.
The load generator shares the machine's cores with the mesh."""

from __future__ import annotations

import argparse
import asyncio
import json
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
    running_mesh,
)

from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402


def rest(port: int, secret_key: str, payment_method: str, capture: bool):
    create = json.dumps(
        {
            "amount": 1999,
            "currency": "usd",
            "payment_method": payment_method,
            "confirm": True,
            "capture_method": "manual" if capture else "automatic",
        }
    ).encode()

    async def make():
        http = KeepAliveHttp(port, {"Authorization": f"Bearer {secret_key}"})

        async def send() -> bool:
            status, body = await http.request("POST", "/v1/payment_intents", create)
            if status != 200 or not capture:
                return status == 200
            intent = json.loads(body)["id"]
            status, _ = await http.request("POST", f"/v1/payment_intents/{intent}/capture", b"{}")
            return status == 200

        return send

    return make


def direct(channel, secret_key: str, payment_method: str, capture: bool):
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    metadata = (("authorization", f"Bearer {secret_key}"),)
    create = gateway_pb2.CreatePaymentIntentRequest(
        amount=1999,
        currency="usd",
        payment_method=payment_method,
        confirm=True,
        capture_method="manual" if capture else "automatic",
    )

    async def make():
        async def send() -> bool:
            try:
                intent = await stub.CreatePaymentIntent(create, metadata=metadata, timeout=10)
                if capture:
                    await stub.CapturePaymentIntent(
                        gateway_pb2.CapturePaymentIntentRequest(id=intent.id),
                        metadata=metadata,
                        timeout=10,
                    )
            except grpc.aio.AioRpcError:
                return False
            return True

        return send

    return make


async def run(bench, seconds: float, concurrencies: list[int]) -> None:
    mesh = bench.mesh
    http = KeepAliveHttp(mesh.ports.envoy, {"Authorization": f"Bearer {bench.secret_key}"})
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": datetime.now(UTC).year + 2}
    status, body = await http.request(
        "POST", "/v1/payment_methods", json.dumps({"card": {**card, "cvc": "123"}}).encode()
    )
    assert status == 200, body
    payment_method = json.loads(body)["id"]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}")
    scenarios = [
        (
            "authorize via Envoy REST",
            rest(mesh.ports.envoy, bench.secret_key, payment_method, False),
        ),
        ("authorize gRPC", direct(channel, bench.secret_key, payment_method, False)),
        (
            "create+confirm+capture REST",
            rest(mesh.ports.envoy, bench.secret_key, payment_method, True),
        ),
        ("create+confirm+capture gRPC", direct(channel, bench.secret_key, payment_method, True)),
    ]
    for name, make in scenarios:
        await closed_loop(name, 4, 1.0, make)  # warm-up: pools, caches, the PSP token
        for concurrency in concurrencies:
            before = cpu_seconds(mesh)
            result = await closed_loop(name, concurrency, seconds, make)
            print(result.row(), flush=True)
            print(cpu_per_request(before, cpu_seconds(mesh), result.requests), flush=True)
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    machine_reference()
    with running_mesh() as bench:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        asyncio.run(run(bench, args.seconds, concurrencies))


if __name__ == "__main__":
    main()
