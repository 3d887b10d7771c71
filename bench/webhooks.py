"""Webhook benchmark: merchant deliveries end to end, to a receiver on loopback (aiohttp, a
process of its own).

    .venv/bin/python bench/webhooks.py --events 10000 --payments-per-second 100 --seconds 20

1. Throughput: `--events` deliveries of domain events published to RabbitMQ as the outbox
   relay does, to one endpoint, then fanned out to 10 (`--endpoints`); deliveries/s from the
   first publish to the last delivery, and the time from publish to delivery (p50/p95/p99).
2. Lag: payments through Envoy at `--payments-per-second` for `--seconds`; for each
   `payment_intent.succeeded`, the time from the payment's answer to its delivery.

Both print the machine's own reference (a grpc.aio echo) first, and each figure's ratio."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).parent))
from harness import (  # noqa: E402
    BIN,
    cpu_per_request,
    cpu_seconds,
    machine_reference,
    running_mesh,
)

from dev.devmesh import free_port

ENV = {"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "LOG_LEVEL": "WARNING"}


def serve_receiver(port: int) -> None:
    """The receiver: answers 200 to every delivery and remembers (arrival, object id)."""
    from aiohttp import web

    arrivals: list[tuple[float, str, str]] = []

    async def delivery(request: web.Request) -> web.Response:
        body = await request.json()
        arrivals.append((time.time(), body["data"]["object"]["id"], body["id"]))
        return web.Response(text="ok")

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def count(_request: web.Request) -> web.Response:
        return web.json_response(len(arrivals))

    app = web.Application()
    app.add_routes(
        [
            web.post("/hook/{endpoint}", delivery),
            web.get("/stats", stats),
            web.get("/count", count),
        ]
    )
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def call(url: str, body: dict | None = None, key: str = "") -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data, headers)  # noqa: S310 - our own mesh
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def arrivals(port: int) -> list[tuple[float, str, str]]:
    return call(f"http://127.0.0.1:{port}/stats")


def wait_for(port: int, count: int, timeout: float) -> list:
    """Every arrival, once there are `count` (polled by count: the receiver's CPU stays its
    own work's)."""
    deadline = time.monotonic() + timeout
    while True:
        got = call(f"http://127.0.0.1:{port}/count")
        if got >= count:
            return arrivals(port)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{got}/{count} deliveries within {timeout:.0f} s")
        time.sleep(0.2)


def quantiles_ms(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles([v * 1000 for v in values], n=100)
    return q[49], q[94], q[98]


def throughput(
    bench,
    receiver: subprocess.Popen,
    port: int,
    deliveries: int,
    endpoints: int,
    timeout: float,
    reference: float,
) -> None:
    """`deliveries` in all: each event goes to every one of the `endpoints`."""
    events = deliveries // endpoints
    before = len(arrivals(port))
    others = {"receiver": receiver.pid}
    cpu_before = cpu_seconds(bench.mesh, others)
    created = datetime.now(UTC).isoformat()
    connection = pika.BlockingConnection(pika.URLParameters(bench.infra.amqp_url))
    published: dict[str, float] = {}
    try:
        channel = connection.channel()
        for n in range(events):
            object_id = f"re_bench{n:08d}"
            message = {
                "id": f"evt_bench{n:08d}x{int(time.time())}",
                "type": "refund.created",
                "created": created,
                "data": {
                    "object_type": "refund",
                    "object_id": object_id,
                    "merchant_id": bench.merchant_id,
                    "livemode": False,
                    "amount": 100,
                    "currency": "usd",
                    "status": "pending",
                },
                "sequence": n + 1,
            }
            published[object_id] = time.time()
            channel.basic_publish("paymesh.events", "refund.created", json.dumps(message))
    finally:
        connection.close()
    started = min(published.values())
    got = wait_for(port, before + events * endpoints, timeout)[before:]
    cpu = cpu_per_request(cpu_before, cpu_seconds(bench.mesh, others), len(got), "delivery")
    elapsed = max(at for at, _, _ in got) - started
    p50, p95, p99 = quantiles_ms([at - published[obj] for at, obj, _ in got])
    rate = len(got) / elapsed
    print(
        f"webhooks  {endpoints:>2} endpoint(s)  {rate:8.1f} deliveries/s  ({len(got)} in"
        f" {elapsed:.1f} s, ratio to echo"
        f" {rate / reference:.3f})  publish→delivered p50 {p50:.0f} ms  p95 {p95:.0f} ms"
        f"  p99 {p99:.0f} ms",
        flush=True,
    )
    print(cpu, flush=True)


async def pay_at_rate(bench, per_second: float, seconds: float) -> dict[str, float]:
    """Payments at a steady pace; each intent's id → when its answer came back."""
    import aiohttp

    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
    key = bench.secret_key
    pm = call(bench.mesh.url("/v1/payment_methods"), {"card": card}, key)["id"]
    body = {"amount": 1000, "currency": "usd", "payment_method": pm, "confirm": True}
    answered: dict[str, float] = {}
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {key}"}) as session:

        async def one(n: int) -> None:
            headers = {"idempotency-key": f"bench-{n}-{time.time()}"}
            async with session.post(
                bench.mesh.url("/v1/payment_intents"), json=body, headers=headers
            ) as response:
                intent = await response.json()
            answered[intent["id"]] = time.time()

        tasks = []
        start = time.monotonic()
        for n in range(int(per_second * seconds)):
            await asyncio.sleep(max(0.0, start + n / per_second - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return answered


def lag(bench, port: int, per_second: float, seconds: float, reference: float) -> None:
    before = len(arrivals(port))
    answered = asyncio.run(pay_at_rate(bench, per_second, seconds))
    got = wait_for(port, before + len(answered), 60)[before:]
    lags = [at - answered[obj] for at, obj, _ in got if obj in answered]
    p50, p95, p99 = quantiles_ms(lags)
    print(
        f"webhooks  lag at {per_second:.0f} payments/s: payment answered→delivered p50 {p50:.0f}"
        f" ms  p95 {p95:.0f} ms  p99 {p99:.0f} ms  ({len(lags)} deliveries; echo reference"
        f" {reference:.0f}/s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--payments-per-second", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument(
        "--endpoints",
        default="1,10",
        type=lambda text: sorted(int(n) for n in text.split(",")),
        help="the throughput runs: events fanned out to this many endpoints",
    )
    args = parser.parse_args()
    reference = machine_reference()
    port = free_port()
    receiver = subprocess.Popen([str(BIN / "python"), __file__, "receiver", str(port)])
    try:
        with running_mesh(extra_env=ENV) as bench:
            key = bench.secret_key
            for n in range(max(args.endpoints)):
                events = ["refund.created"] + (["payment_intent.succeeded"] if n == 0 else [])
                body = {"url": f"http://127.0.0.1:{port}/hook/{n}", "enabled_events": events}
                call(bench.mesh.url("/v1/webhook_endpoints"), body, key)
                if n + 1 in args.endpoints:  # the first n + 1 endpoints receive each event
                    throughput(bench, receiver, port, args.events, n + 1, args.timeout, reference)
            lag(bench, port, args.payments_per_second, args.seconds, reference)
    finally:
        receiver.terminate()
        receiver.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["receiver"]:
        serve_receiver(int(sys.argv[2]))
    else:
        main()
