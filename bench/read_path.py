"""Read-path benchmark of the foundation: GET a payment intent through Envoy (REST, keep-alive)
and straight to gateway_svc over gRPC, at several concurrencies.

    make bench            # or: .venv/bin/python bench/read_path.py --seconds 10

Starts a mesh of its own (fresh database and vhost, free ports) and stops it afterwards.
The load generator shares the machine's cores with the mesh; read the figures as such."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc
import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from harness import closed_loop, http_sender, machine_reference, running_mesh  # noqa: E402

from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402

INTENT_ID = "pi_benchmark0001"


async def grpc_worker_factory(port: int, secret_key: str):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    request = gateway_pb2.GetPaymentIntentRequest(id=INTENT_ID)
    metadata = (("authorization", f"Bearer {secret_key}"),)

    async def make():
        async def send() -> bool:
            try:
                await stub.GetPaymentIntent(request, timeout=5, metadata=metadata)
            except grpc.aio.AioRpcError:
                return False
            return True

        return send

    return make, channel


async def run(bench, seconds: float, concurrencies: list[int]) -> None:
    mesh = bench.mesh
    auth = {"Authorization": f"Bearer {bench.secret_key}"}
    rest = http_sender(mesh.ports.envoy, "GET", f"/v1/payment_intents/{INTENT_ID}", auth)
    direct, channel = await grpc_worker_factory(mesh.ports.grpc["gateway"], bench.secret_key)
    for name, make in (("GET intent via Envoy REST", rest), ("GetPaymentIntent gRPC", direct)):
        await closed_loop(name, 4, 1.0, make)  # warm-up: connections, pools, caches
        for concurrency in concurrencies:
            print((await closed_loop(name, concurrency, seconds, make)).row(), flush=True)
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    machine_reference()
    with running_mesh() as bench:
        with psycopg.connect(bench.infra.database_url, autocommit=True) as db:
            db.execute(
                "INSERT INTO gateway.payment_intents (id, merchant_id, livemode, amount,"
                " currency, status, capture_method) VALUES (%s, %s, false, 1000,"
                " 'usd', 'succeeded', 'automatic')",
                (INTENT_ID, bench.merchant_id),
            )
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        asyncio.run(run(bench, args.seconds, concurrencies))


if __name__ == "__main__":
    main()
