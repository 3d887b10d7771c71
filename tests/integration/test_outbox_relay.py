"""The transactional outbox against the real PostgreSQL and RabbitMQ: every event arrives,
in order per aggregate, rows are marked sent only after the broker confirmed them, and a
broker outage in the middle loses and reorders nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict

import pika
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from sqlalchemy import MetaData, func, select, text

from paymesh.platform.amqp import BrokerUnavailable, ConfirmingPublisher
from paymesh.platform.db import create_engine
from paymesh.platform.outbox import OutboxRelay, add_event, event_values, outbox_table
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

EXCHANGE = "paymesh.events"
# The mesh's own relays publish to the same vhost: this test's events carry their own type.
TEST_EVENT = "outbox_test.updated"


@pytest.fixture
def consumer(infra):
    """A queue bound to every event on the run's own vhost; returns a function that drains it."""
    connection = pika.BlockingConnection(pika.URLParameters(infra.amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=500)
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, EXCHANGE, routing_key="#")

    def drain() -> list[tuple[pika.BasicProperties, dict]]:
        """Everything queued so far (consumed with prefetch, until the queue stays quiet)."""
        received = []
        for method, properties, body in channel.consume(
            queue, auto_ack=True, inactivity_timeout=0.3
        ):
            if method is None:
                break
            received.append((properties, json.loads(body)))
        channel.cancel()
        return received

    yield drain
    connection.close()


@pytest.fixture
def outbox(infra):
    """An outbox table in a schema of this test's own, so no service relay competes for it."""
    schema = f"outbox_test_{uuid.uuid4().hex[:8]}"
    metadata = MetaData()
    table = outbox_table(metadata, schema)

    async def create():
        engine = create_engine(infra.database_url)
        async with engine.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            await connection.run_sync(metadata.create_all)
        await engine.dispose()

    asyncio.run(create())
    return table


async def write_events(engine, table, aggregates: int, per_aggregate: int) -> None:
    """Events in order: for each sequence number, one per aggregate (ids grow in that order)."""
    async with engine.begin() as connection:
        await connection.execute(
            table.insert(),
            [
                event_values(
                    event_type=TEST_EVENT,
                    aggregate_type="payment_intent",
                    aggregate_id=f"pi_{aggregate}",
                    payload={"seq": seq},
                )
                for seq in range(per_aggregate)
                for aggregate in range(aggregates)
            ],
        )


async def pending(engine, table) -> int:
    async with engine.connect() as connection:
        return await connection.scalar(
            select(func.count()).select_from(table).where(table.c.published_at.is_(None))
        )


def first_seen_order(messages) -> dict[str, list[int]]:
    """Per aggregate, the sequence numbers in the order they first arrived (duplicates dropped)."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for properties, body in messages:
        if body["type"] != TEST_EVENT or properties.message_id in seen:
            continue
        seen.add(properties.message_id)
        order[body["data"]["object_id"]].append(body["data"]["seq"])
    return order


@contextlib.asynccontextmanager
async def broker_behind_a_proxy(infra):
    """(engine, proxy, publisher): a publisher that reaches this run's vhost through a proxy
    the test can cut, hold and restore; all three closed afterwards."""
    engine = create_engine(infra.database_url)
    proxy = TcpProxy("127.0.0.1", 5672).start()
    publisher = ConfirmingPublisher(
        f"amqp://guest:guest@127.0.0.1:{proxy.port}/{infra.name}", EXCHANGE, 0.2
    )
    publisher.start()
    try:
        yield engine, proxy, publisher
    finally:
        await publisher.stop()
        proxy.stop()
        await engine.dispose()


def test_a_broker_outage_mid_stream_loses_and_reorders_nothing(infra, outbox, consumer):
    # Enough events that the cut surely lands mid-stream, not after the last batch.
    aggregates, per_aggregate = 10, 500

    async def scenario():
        async with broker_behind_a_proxy(infra) as (engine, proxy, publisher):
            relay = OutboxRelay("test", engine, outbox, publisher, batch_size=50, error_delay=0.2)
            await write_events(engine, outbox, aggregates, per_aggregate)
            relay_task = asyncio.create_task(relay.run())
            try:
                # Cut the broker off once part of the backlog went out, then bring it back.
                while await pending(engine, outbox) > aggregates * per_aggregate * 0.6:
                    await asyncio.sleep(0.01)
                failed = relay_errors("test")
                proxy.stop()
                # Two rounds of the relay failed against the cut: rows are still pending.
                while relay_errors("test") < failed + 2:
                    await asyncio.sleep(0.05)
                assert await pending(engine, outbox) > 0
                proxy.start()
                while await pending(engine, outbox) > 0:
                    await asyncio.sleep(0.05)
            finally:
                relay_task.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 60))

    messages = wait_until(lambda: consumer() or None, timeout=5)
    order = first_seen_order(messages)
    assert sorted(order) == [f"pi_{a}" for a in range(aggregates)]
    for aggregate, seqs in order.items():
        assert seqs == list(range(per_aggregate)), f"{aggregate} arrived out of order or lossy"


def relay_errors(service: str) -> float:
    return REGISTRY.get_sample_value("outbox_relay_errors_total", {"service": service}) or 0.0


def oldest_pending(service: str) -> float | None:
    return REGISTRY.get_sample_value("outbox_oldest_pending_seconds", {"service": service})


def test_rows_stay_pending_while_the_broker_is_unreachable(infra, outbox, consumer):
    async def scenario():
        async with broker_behind_a_proxy(infra) as (engine, proxy, publisher):
            relay = OutboxRelay("test", engine, outbox, publisher)
            try:
                while not publisher.connected:
                    await asyncio.sleep(0.05)
                proxy.stop()
                while publisher.connected:
                    await asyncio.sleep(0.05)
                await write_events(engine, outbox, aggregates=1, per_aggregate=3)
                ages = []
                for _ in range(2):  # OutboxBacklogOld's signal grows with each failed round
                    with pytest.raises(BrokerUnavailable):
                        await relay.relay_once()
                    ages.append(oldest_pending("test"))
                    await asyncio.sleep(0.5)
                assert await pending(engine, outbox) == 3
                assert ages[1] >= ages[0] + 0.5

                proxy.start()
                while not publisher.connected:
                    await asyncio.sleep(0.05)
                assert await relay.relay_once() == 3
                assert await pending(engine, outbox) == 0
                assert await relay.relay_once() == 0
                assert oldest_pending("test") == 0
            finally:
                await relay.release()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    received = [body["data"]["seq"] for _, body in consumer() if body["type"] == TEST_EVENT]
    assert received == [0, 1, 2]


def test_a_running_service_relays_its_outbox_with_the_trace_context(mesh, infra, consumer):
    from gateway_svc.tables import outbox as gateway_outbox

    tracer = TracerProvider().get_tracer("test")
    aggregate_id = f"pi_{uuid.uuid4().hex[:12]}"

    async def write():
        engine = create_engine(infra.database_url)
        with tracer.start_as_current_span("checkout") as span:
            async with engine.begin() as connection:
                await add_event(
                    connection,
                    gateway_outbox,
                    event_type="payment_intent.created",
                    aggregate_type="payment_intent",
                    aggregate_id=aggregate_id,
                    payload={"amount": 1000},
                )
        await engine.dispose()
        return format(span.get_span_context().trace_id, "032x")

    trace_id = asyncio.run(write())

    def delivered():
        return [m for m in consumer() if m[1]["data"]["object_id"] == aggregate_id]

    [(properties, body)] = wait_until(delivered, timeout=30)
    assert body["type"] == "payment_intent.created"
    assert body["data"]["amount"] == 1000
    assert properties.delivery_mode == 2
    assert properties.message_id == body["id"]
    assert trace_id in properties.headers["traceparent"]


def test_no_transaction_stays_open_while_the_broker_takes_its_time(infra, outbox, consumer):
    """The broker's confirms may take seconds: the relay must not hold a transaction (and
    its snapshot and locks) open meanwhile."""

    async def scenario():
        async with broker_behind_a_proxy(infra) as (engine, proxy, publisher):
            relay = OutboxRelay("test", engine, outbox, publisher)
            try:
                while not publisher.connected:
                    await asyncio.sleep(0.05)
                await write_events(engine, outbox, aggregates=1, per_aggregate=3)
                proxy.hold()  # connected, but nothing comes back: the confirms do not arrive
                relaying = asyncio.create_task(relay.relay_once())
                await asyncio.sleep(0.5)
                async with engine.connect() as connection:
                    open_transactions = await connection.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database()"
                            " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                        )
                    )
                proxy.resume()
                with contextlib.suppress(Exception):
                    await relaying
                return open_transactions
            finally:
                await relay.release()

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == 0
