"""Vault benchmark: tokenizations per second through Envoy (REST) and straight over gRPC, and
GetPspToken per second from the cache and uncached (decrypt + create at localstripe), each
with p50/p95/p99 and, after each row, the CPU milliseconds per request of every process.

    .venv/bin/python bench/vault.py --seconds 5 --concurrency 1,16,64

Starts a mesh of its own (fresh database, vhost, keys, free ports) and stops it afterwards.
The load generator shares the machine's cores with the mesh."""

from __future__ import annotations

import argparse
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
    http_sender,
    machine_reference,
    running_mesh,
)

from paymesh.platform.callers import LIVEMODE_HEADER, MERCHANT_HEADER  # noqa: E402
from paymesh.platform.service_auth import SERVICE_TOKEN_HEADER, TokenIssuer  # noqa: E402
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc  # noqa: E402

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": datetime.now(UTC).year + 2}


class KeyedHttp(KeepAliveHttp):
    """A keep-alive connection whose next request carries `key` as its `Idempotency-Key`."""

    def __init__(self, port: int, headers: dict[str, str]):
        super().__init__(port, headers)
        self._fixed_headers = self._headers

    def use_key(self, key: str) -> None:
        self._headers = f"{self._fixed_headers}Idempotency-Key: {key}\r\n"


def keyed_rest_sender(port: int, secret_key: str, body: bytes):
    """Tokenizations through Envoy, each with an `Idempotency-Key` of its own, as merchants
    send them: claiming and binding the key is part of what is measured."""
    keys = itertools.count()
    run = os.urandom(4).hex()

    async def make():
        http = KeyedHttp(port, {"Authorization": f"Bearer {secret_key}"})

        async def send() -> bool:
            http.use_key(f"bench-{run}-{next(keys)}")
            status, _ = await http.request("POST", "/v1/payment_methods", body)
            return status == 200

        return send

    return make


async def tokenize_grpc(channel, secret_key: str):
    stub = vault_pb2_grpc.VaultServiceStub(channel)
    request = vault_pb2.CreatePaymentMethodRequest(card=vault_pb2.CardInput(cvc="123", **CARD))
    metadata = (("authorization", f"Bearer {secret_key}"),)

    async def make():
        async def send() -> bool:
            try:
                await stub.CreatePaymentMethod(request, timeout=10, metadata=metadata)
            except grpc.aio.AioRpcError:
                return False
            return True

        return send

    return make


def psp_token_sender(channel, merchant_id: str, tokens):
    stub = vault_pb2_grpc.VaultInternalServiceStub(channel)
    issuer = TokenIssuer("gateway", Path(os.environ["PAYMESH_KEYS_DIR"]))

    async def make():
        async def send() -> bool:
            metadata = (
                (SERVICE_TOKEN_HEADER, issuer.token_for("vault")),
                (MERCHANT_HEADER, merchant_id),
                (LIVEMODE_HEADER, "false"),
            )
            request = vault_pb2.GetPspTokenRequest(
                payment_method=next(tokens), psp="stripe", reason="bench"
            )
            try:
                await stub.GetPspToken(request, timeout=15, metadata=metadata)
            except grpc.aio.AioRpcError:
                return False
            return True

        return send

    return make


async def measured(mesh, name: str, concurrency: int, seconds: float, make) -> None:
    """One row, and the CPU per request by process below it."""
    before = cpu_seconds(mesh)
    result = await closed_loop(name, concurrency, seconds, make)
    print(result.row(), flush=True)
    print(cpu_per_request(before, cpu_seconds(mesh), result.requests), flush=True)


async def run(bench, seconds: float, concurrencies: list[int]) -> None:
    mesh = bench.mesh
    auth = {"Authorization": f"Bearer {bench.secret_key}"}
    body = json.dumps({"card": {**CARD, "cvc": "123"}}).encode()
    rest = http_sender(mesh.ports.envoy, "POST", "/v1/payment_methods", auth, body)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['vault']}")
    direct = await tokenize_grpc(channel, bench.secret_key)
    keyed = keyed_rest_sender(mesh.ports.envoy, bench.secret_key, body)
    scenarios = (
        ("tokenize via Envoy REST", rest),
        ("tokenize REST Idempotency-Key", keyed),
        ("tokenize gRPC", direct),
    )
    for name, make in scenarios:
        await closed_loop(name, 4, 1.0, make)
        for concurrency in concurrencies:
            await measured(mesh, name, concurrency, seconds, make)

    stub = vault_pb2_grpc.VaultServiceStub(channel)
    metadata = (("authorization", f"Bearer {bench.secret_key}"),)
    request = vault_pb2.CreatePaymentMethodRequest(card=vault_pb2.CardInput(cvc="123", **CARD))
    cached_token = (await stub.CreatePaymentMethod(request, metadata=metadata)).id
    cached = psp_token_sender(channel, bench.merchant_id, itertools.repeat(cached_token))
    await closed_loop("GetPspToken cached", 1, 0.5, cached)
    for concurrency in concurrencies:
        await measured(mesh, "GetPspToken cached", concurrency, seconds, cached)

    fresh = [(await stub.CreatePaymentMethod(request, metadata=metadata)).id for _ in range(3000)]
    uncached = psp_token_sender(channel, bench.merchant_id, iter(fresh))
    for concurrency in concurrencies[:2]:
        await measured(mesh, "GetPspToken uncached", concurrency, seconds / 2, uncached)
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
