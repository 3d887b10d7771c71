"""Payments benchmark: payments per second and p50/p95/p99, through Envoy (REST) and straight
to gateway_svc over gRPC, at several concurrencies, sandbox PSP at 0 ms latency.

- `authorize`: create + confirm in one call, automatic capture (the NOTES' speed target),
  one card and no `Idempotency-Key` (the rows docs/performance.md's baseline compares with).
- `authorize mixed`: the same call as merchants send it: 50 distinct cards tokenized up front
  and used in turn, every request with an `Idempotency-Key` of its own (the REST header, the
  `idempotency-key` metadata over gRPC), so no per-card cache flatters the figure and the key's
  claim and settle are part of what is measured. A row counts as an error anything but an
  intent that `succeeded`.
- `create+confirm+capture`: create + confirm (manual capture), then capture: two calls.

    .venv/bin/python bench/payments.py --seconds 5 --concurrency 1,16,64
    .venv/bin/python bench/payments.py --concurrency 1,32 --json-out build/bench.jsonl
    .venv/bin/python bench/payments.py --seconds 30 --concurrency 32 --only "mixed gRPC"
    .venv/bin/python bench/payments.py --concurrency 32 --only authorize --hold-psp-webhooks
    .venv/bin/python bench/payments.py --concurrency 32 --only "authorize via" --tracing

The sandbox PSP announces every capture with a webhook, as real PSPs do, and the rows pay for
taking them in. `--hold-psp-webhooks` has the sandbox keep them instead (its `webhook_hold`
knob), so the rows show what the charge path alone costs; their names say so, and the figures
the issue's targets compare with are the ones without it.

`--tracing` runs the mesh with OTEL_EXPORTER_OTLP_ENDPOINT at an OTLP sink in this process
(every trace sampled unless OTEL_TRACES_SAMPLER says otherwise; batch export): compare its
rows' CPU per request with a run without it, and read the spans each request exported.

Starts a mesh of its own (fresh database, vhost, keys, free ports) and stops it afterwards.
The load generator shares the machine's cores with the mesh."""

from __future__ import annotations

import asyncio
import contextlib
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
    hop_counts,
    hops_per_request,
    machine_reference,
    mesh_arguments,
    running_mesh,
)
from otlp_sink import SpanCounter, otlp_sink  # noqa: E402
from summary import record  # noqa: E402

from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402
from paymesh.platform.masking import luhn_valid  # noqa: E402

MIXED_CARDS = 50
# A few amounts in turn: a merchant's orders are not all the same price.
AMOUNTS = (1999, 4500, 750, 12000, 2599, 999, 31000)


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


def mixed_card_numbers(count: int) -> list[str]:
    """`count` distinct valid test card numbers the sandbox PSP authorizes: Visa and
    Mastercard in turn, Luhn-valid, none of its decline or error cards (which all start
    4000000000)."""
    numbers = []
    for i in range(count):
        body = f"424242{i:09d}" if i % 2 == 0 else f"555555{i:09d}"
        numbers.append(next(body + d for d in "0123456789" if luhn_valid(body + d)))
    return numbers


class KeyedHttp(KeepAliveHttp):
    """A keep-alive connection whose requests can carry an `Idempotency-Key` each."""

    async def post_with_key(self, path: str, body: bytes, key: str) -> tuple[int, bytes]:
        fixed = self._headers
        self._headers = f"{fixed}Idempotency-Key: {key}\r\n"
        try:
            return await self.request("POST", path, body)
        finally:
            self._headers = fixed


class MerchantTraffic:
    """What the mixed workload sends next, shared by all workers: the next card of the 50 in
    turn, the next amount, and a fresh idempotency key (unique across runs and rows)."""

    def __init__(self, payment_methods: list[str]):
        self._cards = itertools.cycle(payment_methods)
        self._amounts = itertools.cycle(AMOUNTS)
        self._keys = itertools.count()
        self._run = os.urandom(4).hex()

    def next(self) -> tuple[str, int, str]:
        return next(self._cards), next(self._amounts), f"bench-{self._run}-{next(self._keys)}"


async def tokenize_mixed(port: int, secret_key: str, count: int) -> list[str]:
    """Tokenizes `count` distinct cards through Envoy, each under an Idempotency-Key."""
    http = KeyedHttp(port, {"Authorization": f"Bearer {secret_key}"})
    exp_year = datetime.now(UTC).year + 2
    payment_methods = []
    for i, number in enumerate(mixed_card_numbers(count)):
        card = {"number": number, "exp_month": 1 + i % 12, "exp_year": exp_year + i % 4}
        body = json.dumps({"card": {**card, "cvc": "123"}}).encode()
        status, answer = await http.post_with_key(
            "/v1/payment_methods", body, f"bench-card-{os.urandom(4).hex()}-{i}"
        )
        assert status == 200, answer
        payment_methods.append(json.loads(answer)["id"])
    return payment_methods


def rest_mixed(port: int, secret_key: str, traffic: MerchantTraffic):
    async def make():
        http = KeyedHttp(port, {"Authorization": f"Bearer {secret_key}"})

        async def send() -> bool:
            payment_method, amount, key = traffic.next()
            create = json.dumps(
                {
                    "amount": amount,
                    "currency": "usd",
                    "payment_method": payment_method,
                    "confirm": True,
                }
            ).encode()
            status, body = await http.post_with_key("/v1/payment_intents", create, key)
            return status == 200 and json.loads(body).get("status") == "succeeded"

        return send

    return make


def direct_mixed(channel, secret_key: str, traffic: MerchantTraffic):
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    auth = ("authorization", f"Bearer {secret_key}")

    async def make():
        async def send() -> bool:
            payment_method, amount, key = traffic.next()
            create = gateway_pb2.CreatePaymentIntentRequest(
                amount=amount, currency="usd", payment_method=payment_method, confirm=True
            )
            metadata = (auth, ("idempotency-key", key))
            try:
                intent = await stub.CreatePaymentIntent(create, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError:
                return False
            return intent.status == "succeeded"

        return send

    return make


async def run(
    bench,
    seconds: float,
    concurrencies: list[int],
    json_out: str | None,
    only: str | None,
    hold_psp_webhooks: bool,
    spans: SpanCounter | None = None,
) -> None:
    mesh = bench.mesh
    suffix = " (traced)" if spans is not None else ""
    if hold_psp_webhooks:
        knobs = KeepAliveHttp(mesh.ports.sandbox_psp, {})
        status, body = await knobs.request("POST", "/_knobs", b'{"webhook_hold": true}')
        assert status == 200, body
        suffix += " (PSP webhooks held)"
    http = KeepAliveHttp(mesh.ports.envoy, {"Authorization": f"Bearer {bench.secret_key}"})
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": datetime.now(UTC).year + 2}
    status, body = await http.request(
        "POST", "/v1/payment_methods", json.dumps({"card": {**card, "cvc": "123"}}).encode()
    )
    assert status == 200, body
    payment_method = json.loads(body)["id"]
    traffic = MerchantTraffic(await tokenize_mixed(mesh.ports.envoy, bench.secret_key, MIXED_CARDS))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}")
    scenarios = [
        (
            "authorize via Envoy REST",
            rest(mesh.ports.envoy, bench.secret_key, payment_method, False),
        ),
        ("authorize gRPC", direct(channel, bench.secret_key, payment_method, False)),
        ("authorize mixed via Envoy REST", rest_mixed(mesh.ports.envoy, bench.secret_key, traffic)),
        ("authorize mixed gRPC", direct_mixed(channel, bench.secret_key, traffic)),
        (
            "create+confirm+capture REST",
            rest(mesh.ports.envoy, bench.secret_key, payment_method, True),
        ),
        ("create+confirm+capture gRPC", direct(channel, bench.secret_key, payment_method, True)),
    ]
    for name, make in scenarios:
        if only and only not in name:
            continue
        name += suffix
        await closed_loop(name, 4, 1.0, make)  # warm-up: pools, caches, the PSP token
        for concurrency in concurrencies:
            hops_before, before = hop_counts(bench), cpu_seconds(mesh)
            spans_before = spans.total() if spans is not None else 0
            result = await closed_loop(name, concurrency, seconds, make)
            cpu = cpu_per_request(before, cpu_seconds(mesh), result.requests)
            hops = hops_per_request(hops_before, hop_counts(bench), result.requests)
            if spans is not None:
                await asyncio.sleep(1.0)  # the last batches' export (OTEL_BSP_SCHEDULE_DELAY)
                exported = (spans.total() - spans_before) / max(result.requests, 1)
                hops += f"\n  spans exported per request: {exported:.1f}"
            record(result, f"{cpu}\n{hops}", json_out, gateways=len(mesh.ports.gateways))
    await channel.close()


def main() -> None:
    parser = mesh_arguments(__doc__, "1,16,64")
    parser.add_argument("--only", help="run only the rows whose name contains this text")
    parser.add_argument(
        "--hold-psp-webhooks",
        action="store_true",
        help="the sandbox PSP keeps its webhooks: the rows leave out taking them in",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="export every service's and Envoy's spans to an OTLP sink in this process",
    )
    args = parser.parse_args()
    machine_reference()
    with contextlib.ExitStack() as stack:
        spans, extra_env = None, {}
        if args.tracing:
            spans, endpoint = stack.enter_context(otlp_sink())
            extra_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "500"}
        bench = stack.enter_context(running_mesh(args.gateway_processes, extra_env))
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        asyncio.run(
            run(
                bench,
                args.seconds,
                concurrencies,
                args.json_out,
                args.only,
                args.hold_psp_webhooks,
                spans,
            )
        )


if __name__ == "__main__":
    main()
