"""The transactional outbox: an event row written in the same transaction as the state change,
and a relay that publishes pending rows to RabbitMQ and marks them sent only after the broker
confirmed them.

Ordering: one relay per schema is active at a time (a session-level advisory lock, held on a
connection of its own for as long as the relay is active), it publishes in id order on one
channel, and a failed batch is retried from its first row, so consumers see every event at
least once and in order per aggregate. Consumers dedupe by `message_id`.

No transaction stays open while the broker confirms (which may take seconds): the batch is
read in one statement, published, then marked sent in another.

A domain event carries its object as the REST API shows it: the event's row holds a snapshot,
the object's database row as the change left it (written in the change's own statement, by
SQL or Python alike), and the relay prints it with the service's API message builder, the one
its reads answer with, as Envoy prints answers. A payload without a snapshot (written before
snapshots were, or a job message) goes out as it was written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from google.protobuf.message import Message as ProtoMessage
from opentelemetry import propagate
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Index,
    MetaData,
    Row,
    String,
    Table,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.advisory_lock import SessionLock
from paymesh.platform.amqp import ConfirmingPublisher, Message
from paymesh.platform.db import autocommit
from paymesh.platform.ids import new_id
from paymesh.platform.metrics import OUTBOX_OLDEST_PENDING, OUTBOX_PUBLISHED, OUTBOX_RELAY_ERRORS
from paymesh.platform.tracing import producer_headers
from paymesh.platform.wire import api_json

log = structlog.get_logger(__name__)


def outbox_table(metadata: MetaData, schema: str) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", String(40), nullable=False, unique=True),
        Column("event_type", String(100), nullable=False),
        Column("aggregate_type", String(60), nullable=False),
        Column("aggregate_id", String(60), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Index("outbox_pending_idx", "id", postgresql_where=text("published_at IS NULL")),
        schema=schema,
    )


SNAPSHOT = "snapshot"


def snapshot(row: Mapping[str, Any], *hidden: str) -> dict[str, Any]:
    """The payload of an event about the object whose database row is `row` (as the change
    left it), its `hidden` columns left out; timestamps as ISO 8601 text."""
    return {
        SNAPSHOT: {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in row.items()
            if name not in hidden
        }
    }


def snapshot_sql(source: str, *hidden: str) -> str:
    """SQL for the same payload, of the row of `source`: a table or CTE named in the FROM of
    the statement that writes the event (its name and `hidden` are code, never input)."""
    row = f"to_jsonb({source})" + "".join(f" - '{name}'" for name in hidden)
    return f"jsonb_build_object('{SNAPSHOT}', {row})"


def snapshot_column(source: str, *hidden: str) -> ColumnElement[Any]:
    """snapshot_sql as a column of a SQLAlchemy SELECT."""
    return literal_column(snapshot_sql(source, *hidden), JSONB)


@dataclass(frozen=True)
class ApiObject:
    """How the REST API shows one kind of object: its table (whose timestamp columns a
    snapshot holds as text) and the message its reads answer with, built from a row."""

    table: Table
    message: Callable[[dict[str, Any]], ProtoMessage]
    # Columns the API does not show that the mesh's own consumers need, carried beside the
    # object in the message's `internal` (never in the object merchants are sent).
    internal: tuple[str, ...] = ()
    moments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        moments = tuple(c.name for c in self.table.columns if isinstance(c.type, DateTime))
        object.__setattr__(self, "moments", moments)

    def render(self, snapshot: Mapping[str, Any]) -> dict[str, Any]:
        row = dict(snapshot)
        for name in self.moments:
            if row.get(name) is not None:
                row[name] = datetime.fromisoformat(row[name])
        return api_json(self.message(row))


def event_values(
    *, event_type: str, aggregate_type: str, aggregate_id: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """An outbox row for an event; the current trace context travels with it."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return {
        "event_id": new_id("evt_"),
        "event_type": event_type,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "payload": payload,
        "headers": headers,
    }


async def add_event(connection: AsyncConnection, table: Table, **event: Any) -> str:
    """Writes an event in the caller's transaction; returns its id."""
    values = event_values(**event)
    await connection.execute(table.insert(), values)
    event_id: str = values["event_id"]
    return event_id


def event_data(row: Row[Any], objects: Mapping[str, ApiObject]) -> dict[str, Any]:
    """What a message says of the event's object: its kind, id, owner and, from a snapshot,
    the object as the API shows it (`object`)."""
    named = {"object_type": row.aggregate_type, "object_id": row.aggregate_id}
    taken = row.payload.get(SNAPSHOT)
    if taken is None:
        return {**named, **row.payload}
    try:
        shown = objects[row.aggregate_type].render(taken)
    except Exception as error:
        # A bug, not bad luck: the relay stops here (and says so) rather than lose the event.
        raise ValueError(
            f"event {row.event_id} ({row.event_type}): its {row.aggregate_type} cannot be shown"
        ) from error
    data = {
        **named,
        "merchant_id": taken["merchant_id"],
        "livemode": taken["livemode"],
        "object": shown,
    }
    internal = objects[row.aggregate_type].internal
    if internal:
        data["internal"] = {name: taken.get(name) for name in internal}
    return data


def to_message(row: Row[Any], objects: Mapping[str, ApiObject] | None = None) -> Message:
    created: datetime = row.created_at
    body = {
        "id": row.event_id,
        "type": row.event_type,
        "created": created.astimezone(UTC).isoformat(),
        "data": event_data(row, objects or {}),
        # The outbox row's id: later changes of one object have larger numbers, so a consumer
        # can drop a stale update (each object lives in one service's outbox).
        "sequence": row.id,
    }
    return Message(
        routing_key=row.event_type,
        body=json.dumps(body, separators=(",", ":")).encode(),
        message_id=row.event_id,
        message_type=row.event_type,
        headers={**row.headers, "aggregate_id": row.aggregate_id},
        timestamp=int(created.timestamp()),
    )


class OutboxRelay:
    def __init__(
        self,
        service: str,
        engine: AsyncEngine,
        table: Table,
        publisher: ConfirmingPublisher,
        objects: Mapping[str, ApiObject] | None = None,
        batch_size: int = 500,
        idle_delay: float = 0.05,
        max_idle_delay: float = 0.5,
        error_delay: float = 1.0,
        session_engine: AsyncEngine | None = None,
    ):
        """`session_engine`: where the relay's lock is held (DATABASE_DIRECT_URL); `engine`
        by default."""
        self._service = service
        self._engine = engine
        self._table = table
        self._publisher = publisher
        self._objects = objects or {}
        self._batch_size = batch_size
        self._idle_delay = idle_delay
        self._max_idle_delay = max_idle_delay
        self._error_delay = error_delay
        # A relay frozen with the lock would stop every event: a standby takes over after
        # stale_after (a deposed relay's last batch goes out twice: consumers dedupe).
        self._lock = SessionLock(
            session_engine or engine, f"outbox-relay:{table.fullname}", stale_after=10.0
        )
        self._autocommit = autocommit(engine)
        self._last_error_logged = 0.0

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self.release()

    async def _run(self) -> None:
        idle_delay = self._idle_delay
        while True:
            try:
                published = await self.relay_once()
            except Exception as error:  # noqa: BLE001 - retried; rows stay pending
                OUTBOX_RELAY_ERRORS.labels(self._service).inc()
                self._log_error(error)
                await asyncio.sleep(self._error_delay)
                continue
            # Busy: poll again at once. Idle: back off up to max_idle_delay, so a quiet
            # service does not spend its CPU asking an empty table 20 times a second.
            if published:
                idle_delay = self._idle_delay
            if published < self._batch_size:
                await asyncio.sleep(idle_delay)
                if not published:
                    idle_delay = min(idle_delay * 2, self._max_idle_delay)

    async def relay_once(self) -> int:
        """Publishes one batch of pending events; returns how many were confirmed."""
        if not await self._lock.held():
            return 0  # another replica's relay is active
        table = self._table
        async with self._autocommit.connect() as connection:
            rows = (
                await connection.execute(
                    select(table)
                    .where(table.c.published_at.is_(None))
                    .order_by(table.c.id)
                    .limit(self._batch_size)
                )
            ).all()
        if not rows:
            OUTBOX_OLDEST_PENDING.labels(self._service).set(0)
            return 0
        OUTBOX_OLDEST_PENDING.labels(self._service).set(
            max(0.0, time.time() - rows[0].created_at.timestamp())
        )
        messages = [self._traced(to_message(row, self._objects)) for row in rows]
        await self._publisher.publish(messages)
        async with self._autocommit.connect() as connection:
            await connection.execute(
                update(table)
                .where(table.c.id.in_([row.id for row in rows]))
                .values(published_at=func.now())
            )
        OUTBOX_PUBLISHED.labels(self._service).inc(len(rows))
        return len(rows)

    def _traced(self, message: Message) -> Message:
        """The message with a producer span's traceparent, in the trace that wrote the event."""
        headers = producer_headers(
            message.headers, self._publisher.exchange, message.routing_key, message.message_id
        )
        return dataclasses.replace(message, headers=headers)

    async def release(self) -> None:
        """Gives the relay lock up."""
        await self._lock.release()

    def _log_error(self, error: Exception) -> None:
        # Once per 30 s is enough while the broker is down.
        now = time.monotonic()
        if now - self._last_error_logged > 30:
            self._last_error_logged = now
            log.warning("outbox_relay_failed", error=f"{type(error).__name__}: {error}")
