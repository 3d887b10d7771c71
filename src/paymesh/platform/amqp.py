"""RabbitMQ through pika's asyncio adapter: one connection and one channel in publisher-confirm
mode, reconnecting on its own. Publishing a batch returns when the broker has confirmed every
message of it, so confirms are awaited per batch, not per message.

AMQP_URL may name several nodes of a cluster, comma-separated (`amqp://…@a:5672/%2F,
amqp://…@b:5672/%2F`): a connection goes to the first that answers, starting from the one
that answered last, and a lost connection is made again to the next that answers. A comma
inside a URL (a password) is written `%2C`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import structlog
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel
from pika.exceptions import AMQPError

log = structlog.get_logger(__name__)


class BrokerUnavailable(Exception):
    """Not connected, the connection dropped, or the broker refused a message."""


@dataclass(frozen=True)
class Message:
    routing_key: str
    body: bytes
    message_id: str
    message_type: str
    headers: dict[str, str] = field(default_factory=dict)
    timestamp: int | None = None

    def properties(self) -> pika.BasicProperties:
        return pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=self.message_id,
            type=self.message_type,
            timestamp=self.timestamp,
            headers=self.headers,
        )


def broker_urls(amqp_url: str) -> list[str]:
    """The addresses AMQP_URL names: one URL, or several separated by commas."""
    urls = [url.strip() for url in amqp_url.split(",")]
    if not all(urls):
        raise ValueError("AMQP_URL: an empty address in the list")
    return urls


def connection_parameters(amqp_url: str) -> list[pika.URLParameters]:
    """pika's parameters for each address AMQP_URL names, in its order (BlockingConnection
    takes the list and tries them in turn)."""
    return [_parameters(url) for url in broker_urls(amqp_url)]


def _parameters(url: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = 10
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    params.socket_timeout = 5
    return params


def address(params: pika.URLParameters) -> str:
    return f"{params.host}:{params.port}"


class Brokers:
    """The addresses of AMQP_URL, and which one to try first: the one that answered last
    (a connection lost to a node that went away is made again to the next that answers)."""

    def __init__(self, amqp_url: str):
        self.params = connection_parameters(amqp_url)
        self._first = 0

    def in_turn(self) -> list[pika.URLParameters]:
        return self.params[self._first :] + self.params[: self._first]

    def answered(self, params: pika.URLParameters) -> None:
        self._first = self.params.index(params)


class ConfirmingPublisher:
    def __init__(self, amqp_url: str, exchange: str, reconnect_delay: float = 1.0):
        self._brokers = Brokers(amqp_url)
        self._exchange = exchange
        self._reconnect_delay = reconnect_delay
        self._connection: AsyncioConnection | None = None
        self._channel: Channel | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._last_tag = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def exchange(self) -> str:
        return self._exchange

    @property
    def connected(self) -> bool:
        return self._channel is not None and self._channel.is_open

    def start(self) -> None:
        self._task = asyncio.create_task(self._stay_connected(), name="amqp-publisher")

    async def stop(self) -> None:
        self._stopping = True
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)

    async def publish(self, messages: Sequence[Message], timeout: float = 10.0) -> None:
        """Publishes in order; returns once the broker confirmed all, else BrokerUnavailable."""
        channel = self._channel
        if channel is None or not channel.is_open:
            raise BrokerUnavailable("not connected to RabbitMQ")
        loop = asyncio.get_running_loop()
        confirmations: list[asyncio.Future[None]] = []
        try:
            for message in messages:
                channel.basic_publish(
                    self._exchange, message.routing_key, message.body, message.properties()
                )
                self._last_tag += 1
                confirmation: asyncio.Future[None] = loop.create_future()
                self._pending[self._last_tag] = confirmation
                confirmations.append(confirmation)
        except AMQPError as error:
            raise BrokerUnavailable(f"publish failed: {error!r}") from error
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*confirmations, return_exceptions=True), timeout
            )
        except TimeoutError as error:
            raise BrokerUnavailable("timed out waiting for publisher confirms") from error
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise BrokerUnavailable(str(failed)) from failed

    async def ping(self, timeout: float = 2.0) -> None:
        """A broker round trip: passively declares the exchange."""
        channel = self._channel
        if channel is None or not channel.is_open:
            raise BrokerUnavailable("not connected to RabbitMQ")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        channel.exchange_declare(
            self._exchange, passive=True, callback=lambda _frame: resolve(done, None)
        )
        await asyncio.wait_for(done, timeout)

    async def _stay_connected(self) -> None:
        while not self._stopping:
            try:
                closed = await self._connect()
                reason = await closed
                if not self._stopping:
                    log.warning("amqp_connection_lost", reason=str(reason))
            except Exception as error:  # noqa: BLE001 - logged and retried
                log.warning("amqp_connect_failed", error=f"{type(error).__name__}: {error}")
            self._channel = None
            self._fail_pending(BrokerUnavailable("connection to RabbitMQ lost"))
            if not self._stopping:
                await asyncio.sleep(self._reconnect_delay)

    async def _connect(self) -> asyncio.Future[Any]:
        async def set_up(channel: Channel) -> None:
            await step(
                lambda cb: channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=cb)
            )
            await step(
                lambda cb: channel.exchange_declare(
                    self._exchange, exchange_type="topic", durable=True, callback=cb
                )
            )

        channel, closed = await open_channel(self._brokers, set_up, self._remember)
        self._last_tag = 0
        self._pending.clear()
        self._channel = channel
        return closed

    def _remember(self, connection: AsyncioConnection) -> None:
        self._connection = connection

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tags = (
            [t for t in self._pending if t <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        for tag in tags:
            confirmation = self._pending.pop(tag, None)
            if confirmation is None:
                continue
            if acked:
                resolve(confirmation, None)
            else:
                fail(confirmation, BrokerUnavailable(f"broker nacked message {tag}"))

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for confirmation in pending.values():
            fail(confirmation, error)


async def open_channel(
    brokers: Brokers,
    set_up: Callable[[Channel], Awaitable[None]],
    on_connection: Callable[[AsyncioConnection], None],
) -> tuple[Channel, asyncio.Future[Any]]:
    """Opens a connection to the first of `brokers` that answers (in turn, from the one that
    answered last) and one channel on it, and runs `set_up(channel)` (confirms, qos,
    declarations, consumers). Returns the channel and a future resolved when the connection
    closes; closing the channel closes the connection. `on_connection` receives each
    connection as soon as it exists, so that a stop() during the opening can close it. A
    node that refuses, or fails the set-up, is passed over for the next; when none is left,
    raises BrokerUnavailable (or the last set-up's error)."""
    failures: list[str] = []
    error: BaseException | None = None
    for params in brokers.in_turn():
        try:
            opened = await _open_channel(params, set_up, on_connection)
        except Exception as failed:  # noqa: BLE001 - the next node may answer
            error = failed
            failures.append(f"{address(params)}: {type(failed).__name__}: {failed}")
            continue
        if failures:
            log.warning("amqp_nodes_passed_over", failures=failures)
        brokers.answered(params)
        log.info("amqp_connected", node=address(params))
        return opened
    if len(failures) == 1 and error is not None:
        raise error
    raise BrokerUnavailable("no RabbitMQ node answered: " + "; ".join(failures))


async def _open_channel(
    params: pika.URLParameters,
    set_up: Callable[[Channel], Awaitable[None]],
    on_connection: Callable[[AsyncioConnection], None],
) -> tuple[Channel, asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[AsyncioConnection] = loop.create_future()
    closed: asyncio.Future[Any] = loop.create_future()

    def on_open_error(_connection: AsyncioConnection, error: BaseException | str) -> None:
        fail(opened, BrokerUnavailable(f"cannot connect: {error!r}"))
        resolve(closed, error)

    def on_close(_connection: AsyncioConnection, reason: BaseException) -> None:
        fail(opened, BrokerUnavailable(f"connection closed: {reason!r}"))
        resolve(closed, reason)

    connection = AsyncioConnection(
        params,
        on_open_callback=lambda c: resolve(opened, c),
        on_open_error_callback=on_open_error,
        on_close_callback=on_close,
        custom_ioloop=loop,
    )
    on_connection(connection)
    try:
        await asyncio.wait_for(asyncio.shield(opened), 10)
        channel = await step(lambda cb: connection.channel(on_open_callback=cb))
        channel.add_on_close_callback(lambda _ch, _reason: close_quietly(connection))
        await set_up(channel)
    except BaseException:
        close_quietly(connection)
        raise
    return channel, closed


async def step(start: Callable[[Callable[[Any], None]], object], timeout: float = 10.0) -> Any:
    """One asynchronous pika operation: `start(callback)` begins it; returns what the
    callback received."""
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    start(lambda result: resolve(done, result))
    return await asyncio.wait_for(done, timeout)


def resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        # Mark retrieved: an unawaited failure here is expected, not a bug to report.
        future.exception()


def close_quietly(connection: AsyncioConnection) -> None:
    if connection.is_open:
        connection.close()
