"""Outbox relay benchmark: how fast pending outbox rows reach RabbitMQ with publisher confirms.

    .venv/bin/python bench/outbox_relay.py --events 20000 --batch 500 [--flat]

Uses a fresh database and vhost of its own. Prints events/s and the per-batch round-trip
(publish the batch, await its confirms, mark it sent) p50/p95/p99. Each event carries a
payment intent's snapshot, printed by the relay as the API shows it (the gateway's
EVENT_OBJECTS); `--flat`: a small payload that goes out as written, the relay's floor."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import MetaData, insert, text

from gateway_svc.domain.models import PaymentIntent
from gateway_svc.service import EVENT_OBJECTS
from paymesh.platform.amqp import ConfirmingPublisher
from paymesh.platform.db import create_engine
from paymesh.platform.outbox import OutboxRelay, outbox_table, snapshot

# The developer tools (dev/, beside bench/) are not installed: the repository root holds them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dev.devinfra import create_infra, drop_infra  # noqa: E402


def _payload(i: int, flat: bool) -> dict:
    if flat:
        return {"amount": 1000 + i, "currency": "usd", "status": "succeeded"}
    now = datetime.now(UTC)
    intent = PaymentIntent(
        id=f"pi_{i % 1000}",
        merchant_id="acct_bench",
        livemode=False,
        amount=1000 + i,
        currency="usd",
        status="succeeded",
        capture_method="automatic",
        amount_received=1000 + i,
        payment_method="pm_bench",
        psp="sandbox",
        description="order",
        metadata={"order_id": str(i)},
        created_at=now,
        updated_at=now,
    )
    return snapshot(dataclasses.asdict(intent))


async def run(database_url: str, amqp_url: str, events: int, batch: int, flat: bool) -> None:
    metadata = MetaData()
    table = outbox_table(metadata, "bench_outbox")
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(text('CREATE SCHEMA IF NOT EXISTS "bench_outbox"'))
        await connection.run_sync(metadata.create_all)
        rows = [
            {
                "event_id": f"evt_{uuid.uuid4().hex}",
                "event_type": "payment_intent.succeeded",
                "aggregate_type": "payment_intent",
                "aggregate_id": f"pi_{i % 1000}",
                "payload": _payload(i, flat),
                "headers": {},
            }
            for i in range(events)
        ]
        await connection.execute(insert(table), rows)

    publisher = ConfirmingPublisher(amqp_url, "paymesh.events")
    publisher.start()
    while not publisher.connected:
        await asyncio.sleep(0.05)
    relay = OutboxRelay("bench", engine, table, publisher, EVENT_OBJECTS, batch_size=batch)
    batch_ms: list[float] = []
    started = time.perf_counter()
    published = 0
    while published < events:
        t0 = time.perf_counter()
        published += await relay.relay_once()
        batch_ms.append((time.perf_counter() - t0) * 1e3)
    elapsed = time.perf_counter() - started
    await relay.release()
    await publisher.stop()
    await engine.dispose()

    q = statistics.quantiles(batch_ms, n=100)
    print(
        f"outbox relay  {'flat' if flat else 'objects'} batch={batch:<4} "
        f"{events / elapsed:>8.0f} events/s  "
        f"batch p50 {q[49]:6.1f} ms  p95 {q[94]:6.1f} ms  p99 {q[98]:6.1f} ms  "
        f"({events} events in {elapsed:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--flat", action="store_true", help="payloads without a snapshot")
    args = parser.parse_args()
    infra = create_infra("paymesh_bench")
    try:
        asyncio.run(run(infra.database_url, infra.amqp_url, args.events, args.batch, args.flat))
    finally:
        drop_infra(infra)


if __name__ == "__main__":
    main()
