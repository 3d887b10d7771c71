"""Inbound PSP webhook benchmark: the `charge.captured` a PSP sends for every capture, as
the sandbox PSP sends it (signed, through Envoy to webhook_svc, applied through the
gateway's PspEventService), for payments the gateway has already captured, which is what
the echo of each of our own charges is. Every webhook is a new event of one of `--intents`
captured payments in turn, so the inbox never answers "duplicate".

    .venv/bin/python bench/psp_webhooks.py --seconds 10 --concurrency 1,16

Prints webhooks/s and p50/p95/p99 per concurrency, the ratio to the machine's echo
reference, and the CPU milliseconds per webhook of every process: what the echo adds to
each charge (bench/payments.py and bench/rebill.py pay for it inside their own figures)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from pathlib import Path

import grpc
import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from harness import (  # noqa: E402
    KeepAliveHttp,
    closed_loop,
    cpu_per_request,
    cpu_seconds,
    hop_counts,
    hops_per_request,
    machine_reference,
    mesh_arguments,
    running_mesh,
)
from read_path import tokenize  # noqa: E402
from summary import record  # noqa: E402

from dev.sandbox_psp import DEV_WEBHOOK_SECRET, signature  # noqa: E402
from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402

PATH = "/v1/psp/sandbox/webhooks"


async def captured_payments(bench, count: int) -> list[tuple[str, str, int]]:
    """`count` payments captured at the sandbox PSP: (PSP reference, attempt key, amount)."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{bench.mesh.ports.grpc['gateway']}")
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    card = await tokenize(bench.mesh.ports.envoy, bench.secret_key, "4242424242424242")
    metadata = (("authorization", f"Bearer {bench.secret_key}"),)
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        request = gateway_pb2.CreatePaymentIntentRequest(
            amount=1000 + i, currency="usd", payment_method=card, confirm=True
        )
        async with gate:
            return (await stub.CreatePaymentIntent(request, metadata=metadata, timeout=30)).id

    ids = await asyncio.gather(*(one(i) for i in range(count)))
    await channel.close()
    with psycopg.connect(bench.infra.database_url) as db:
        return db.execute(
            "SELECT psp_reference, attempt_key, amount_received FROM gateway.payment_intents"
            " WHERE id = ANY(%s) AND status = 'succeeded'",
            (list(ids),),
        ).fetchall()


def webhook_sender(port: int, payments):
    """Each send: a new `charge.captured` event of the next payment, signed as the sandbox
    PSP signs it."""
    numbers = itertools.count()
    run = os.urandom(4).hex()

    async def make():
        http = KeepAliveHttp(port, {})

        async def send() -> bool:
            reference, attempt_key, amount = next(payments)
            body = json.dumps(
                {
                    "id": f"evt_bench_{run}_{next(numbers)}",
                    "object": "event",
                    "type": "charge.captured",
                    "created": int(time.time()),
                    "data": {
                        "object": {
                            "id": reference,
                            "amount_captured": amount,
                            "currency": "usd",
                            "idempotency_key": attempt_key,
                        }
                    },
                }
            ).encode()
            signed = signature(body, DEV_WEBHOOK_SECRET, int(time.time()))
            status, _ = await http.request("POST", PATH, body, {"Sandbox-Signature": signed})
            return status == 200

        return send

    return make


async def run(bench, args) -> None:
    mesh = bench.mesh
    payments = itertools.cycle(await captured_payments(bench, args.intents))
    await asyncio.sleep(2)  # the sandbox's own webhooks of those captures come in first
    make = webhook_sender(mesh.ports.envoy, payments)
    name = "PSP webhook via Envoy"
    await closed_loop(name, 4, 1.0, make)  # warm-up: connections, pools, prepared statements
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        hops_before, before = hop_counts(bench), cpu_seconds(mesh)
        result = await closed_loop(name, concurrency, args.seconds, make)
        cpu = cpu_per_request(before, cpu_seconds(mesh), result.requests, "webhook")
        hops = hops_per_request(hops_before, hop_counts(bench), result.requests, "webhook")
        record(result, f"{cpu}\n{hops}", args.json_out, gateways=len(mesh.ports.gateways))


def main() -> None:
    parser = mesh_arguments(__doc__, "1,16")
    parser.add_argument("--intents", type=int, default=200, help="captured payments to echo")
    args = parser.parse_args()
    machine_reference()
    with running_mesh(args.gateway_processes) as bench:
        asyncio.run(run(bench, args))


if __name__ == "__main__":
    main()
