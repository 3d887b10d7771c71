"""Consuming RabbitMQ queues through pika's asyncio adapter: prefetch-bounded, manual acks.
Each message is handled by an async function whose verdict is sent back on the channel it
came from: ack (done), reject (to the queue's dead-letter exchange) or requeue (try again).
A message whose handler was cut off (the connection dropped, the process died) was never
acked, so the broker delivers it again. Acks that become due together (a batch of messages
written in one statement) go out as one frame where AMQP allows it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pika
import structlog
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.blocking_connection import BlockingChannel
from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from paymesh.platform.amqp import Brokers, connection_parameters, open_channel, step
from paymesh.platform.tracing import consumer_span

log = structlog.get_logger(__name__)


class Verdict(Enum):
    ACK = "ack"
    REJECT = "reject"  # dead-lettered, never redelivered
    REQUEUE = "requeue"


@dataclass(frozen=True)
class Delivery:
    queue: str
    body: bytes
    properties: pika.BasicProperties
    redelivered: bool


Handler = Callable[[Delivery], Awaitable[Verdict]]


def declare(amqp_url: str, declare_on: Callable[[BlockingChannel], None]) -> None:
    """Declares exchanges, queues and bindings on a short-lived blocking connection to the
    first node of AMQP_URL that answers (call it in a thread); declarations are idempotent."""
    connection = pika.BlockingConnection(connection_parameters(amqp_url))
    try:
        declare_on(connection.channel())
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def ready_counts(amqp_url: str, queues: Sequence[str]) -> dict[str, int]:
    """Messages ready in each queue (a passive declare; call it in a thread)."""
    connection = pika.BlockingConnection(connection_parameters(amqp_url))
    try:
        channel = connection.channel()
        return {q: channel.queue_declare(q, passive=True).method.message_count for q in queues}
    finally:
        with contextlib.suppress(Exception):
            connection.close()


class ChannelVerdicts:
    """A channel's verdicts. Rejects and requeues go out at once; the acks due in one turn of
    the event loop go out together at its end, as one `multiple` ack for those below every
    message still being handled (it acknowledges every unacknowledged delivery up to its
    tag), one by one for the rest: no ack waits for a slower message."""

    def __init__(self, channel: Channel):
        self._channel = channel
        self._handling: set[int] = set()
        self._acks: list[int] = []

    def delivered(self, tag: int) -> None:
        self._handling.add(tag)

    def send(self, tag: int, verdict: Verdict) -> None:
        self._handling.discard(tag)
        if not self._channel.is_open:
            return  # the broker redelivers it: its connection is gone
        if verdict is Verdict.ACK:
            if not self._acks:
                asyncio.get_running_loop().call_soon(self.flush)
            self._acks.append(tag)
        elif verdict is Verdict.REJECT:
            self._channel.basic_reject(tag, requeue=False)
        else:
            self._channel.basic_nack(tag, requeue=True)

    def flush(self) -> None:
        acks, self._acks = self._acks, []
        if not acks or not self._channel.is_open:
            return
        lowest_handled = min(self._handling, default=None)
        together = [t for t in acks if lowest_handled is None or t < lowest_handled]
        if together:
            self._channel.basic_ack(max(together), multiple=True)
        for tag in acks:
            if lowest_handled is not None and tag > lowest_handled:
                self._channel.basic_ack(tag)


class Consumer:
    def __init__(
        self,
        amqp_url: str,
        queues: Sequence[str],
        handle: Handler,
        prefetch: int = 10,
        reconnect_delay: float = 1.0,
        declare_on: Callable[[BlockingChannel], None] | None = None,
    ):
        """`declare_on` declares the queues (and what they need) before each connection
        consumes: a broker that restarted without its data gets them back."""
        self._brokers = Brokers(amqp_url)
        self._queues = list(queues)
        self._handle = handle
        self._prefetch = prefetch
        self._reconnect_delay = reconnect_delay
        self._amqp_url = amqp_url
        self._declare_on = declare_on
        self._connection: AsyncioConnection | None = None
        self._verdicts: ChannelVerdicts | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Consumes until stop(); reconnects after a lost connection."""
        while not self._stopping:
            try:
                closed = await self._connect()
                log.info("amqp_consuming", queues=self._queues, prefetch=self._prefetch)
                reason = await closed
                if not self._stopping:
                    log.warning("amqp_consumer_lost", reason=str(reason))
            except Exception as error:  # noqa: BLE001 - logged and retried
                log.warning(
                    "amqp_consumer_connect_failed", error=f"{type(error).__name__}: {error}"
                )
            self.connected.clear()
            if not self._stopping:
                await asyncio.sleep(self._reconnect_delay)

    async def stop(self, grace: float = 10.0) -> None:
        """Takes no new message, lets the handlers in flight finish (up to `grace` seconds,
        so their acks go out), then closes the connection."""
        self._stopping = True
        connection = self._connection
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=grace)
        if self._verdicts is not None:
            self._verdicts.flush()
        if connection is not None and connection.is_open:
            connection.close()

    async def _connect(self) -> asyncio.Future[Any]:
        if self._declare_on is not None:
            await asyncio.to_thread(declare, self._amqp_url, self._declare_on)

        async def set_up(channel: Channel) -> None:
            # Per consumer (global_qos=False): the only kind quorum queues know.
            await step(lambda cb: channel.basic_qos(prefetch_count=self._prefetch, callback=cb))
            # A consumer the broker cancels (its queue deleted, or unavailable on this node)
            # would receive nothing more, unnoticed: close the channel, so that the connection
            # is made again (to a node that has the queue) and every queue consumed anew.
            channel.add_on_cancel_callback(lambda _frame: self._cancelled(channel))
            self._verdicts = verdicts = ChannelVerdicts(channel)
            for queue in self._queues:
                channel.basic_consume(queue, self._on_message(verdicts, queue))

        _channel, closed = await open_channel(self._brokers, set_up, self._remember)
        self.connected.set()
        return closed

    def _cancelled(self, channel: Channel) -> None:
        log.warning("amqp_consumer_cancelled_by_broker", queues=self._queues)
        if channel.is_open:
            channel.close()

    def _remember(self, connection: AsyncioConnection) -> None:
        self._connection = connection

    def _on_message(
        self, verdicts: ChannelVerdicts, queue: str
    ) -> Callable[[Channel, Basic.Deliver, BasicProperties, bytes], None]:
        def on_message(
            _channel: Channel, method: Basic.Deliver, properties: BasicProperties, body: bytes
        ) -> None:
            tag = method.delivery_tag
            assert tag is not None  # the broker numbers every delivery
            delivery = Delivery(queue, body, properties, bool(method.redelivered))
            verdicts.delivered(tag)
            task = asyncio.create_task(self._process(verdicts, tag, delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

        return on_message

    async def _process(self, verdicts: ChannelVerdicts, tag: int, delivery: Delivery) -> None:
        properties = delivery.properties
        with consumer_span(
            delivery.queue, properties.headers, properties.type or "", properties.message_id or ""
        ) as span:
            try:
                verdict = await self._handle(delivery)
            except Exception as error:  # noqa: BLE001 - a handler's bug must not stop consuming
                log.exception(
                    "amqp_handler_failed", queue=delivery.queue, error=type(error).__name__
                )
                span.record_exception(error)
                verdict = Verdict.REQUEUE
            span.set_attribute("messaging.rabbitmq.verdict", verdict.value)
        verdicts.send(tag, verdict)
