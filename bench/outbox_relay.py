"""Outbox relay benchmark: how fast pending outbox rows reach RabbitMQ with publisher confirms.

    .venv/bin/python bench/outbox_relay.py --events 20000 --batch 500

Uses a fresh database and vhost of its own. Prints events/s and the per-batch round-trip
(publish the batch, await its confirms, mark it sent) p50/p95/p99."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from sqlalchemy import MetaData, insert, text

from paymesh.devinfra import create_infra, drop_infra
from paymesh.platform.amqp import ConfirmingPublisher
from paymesh.platform.db import create_engine
from paymesh.platform.outbox import OutboxRelay, outbox_table


async def run(database_url: str, amqp_url: str, events: int, batch: int) -> None:
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
                "payload": {"amount": 1000 + i, "currency": "usd", "status": "succeeded"},
                "headers": {},
            }
            for i in range(events)
        ]
        await connection.execute(insert(table), rows)

    publisher = ConfirmingPublisher(amqp_url, "paymesh.events")
    publisher.start()
    while not publisher.connected:
        await asyncio.sleep(0.05)
    relay = OutboxRelay("bench", engine, table, publisher, batch_size=batch)
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
        f"outbox relay  batch={batch:<4} {events / elapsed:>8.0f} events/s  "
        f"batch p50 {q[49]:6.1f} ms  p95 {q[94]:6.1f} ms  p99 {q[98]:6.1f} ms  "
        f"({events} events in {elapsed:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    infra = create_infra("paymesh_bench")
    try:
        asyncio.run(run(infra.database_url, infra.amqp_url, args.events, args.batch))
    finally:
        drop_infra(infra)


if __name__ == "__main__":
    main()
