"""The events webhook_svc delivers: taken from RabbitMQ (each domain event once, whatever
the broker redelivers), each fanned out in the same statement to one delivery per endpoint
that subscribes to it; and the merchant's reads, redelivery and recovery of them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import Row, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.amqp_consumer import Delivery, Verdict
from paymesh.platform.callers import Merchant, newest_first_page, owned_by
from paymesh.platform.coalesce import Coalescer
from paymesh.platform.db import autocommit
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.errors import InvalidArgument, NotFound
from paymesh.platform.notifications import notify
from paymesh.platform.tracing import annotate, annotate_object, current_traceparent
from webhook_svc.domain.echoes import SUCCEEDED
from webhook_svc.domain.endpoint_health import EndpointStatus
from webhook_svc.domain.rules import ALL_EVENTS, EVENT_TYPES
from webhook_svc.domain.status import Action, DeliveryStatus, move
from webhook_svc.outbound.metrics import EVENTS_RECEIVED
from webhook_svc.tables import delivery_attempts, events

log = structlog.get_logger(__name__)

# Sent when deliveries became due: every replica's deliverer wakes at once.
WAKE_CHANNEL = "webhook_deliveries"


@dataclass(frozen=True)
class ReceivedEvent:
    id: str
    type: str
    merchant_id: str
    livemode: bool
    object_type: str
    object_id: str
    sequence: int
    object: dict
    created_at: str
    traceparent: str = ""
    psp_reference: str = ""  # the PSP's reference of a payment intent (the gateway's `internal`)


def parse_event(body: bytes) -> ReceivedEvent | None:
    """A domain event as the outbox relay publishes it, or None if it is not one we deliver.
    Its `object` is the object as the REST API shows it (see paymesh.platform.outbox), and
    is delivered as it is. An event written before events carried that (its fields flat in
    `data`) is delivered as it was then."""
    try:
        message = json.loads(body)
        data = dict(message["data"])
        object_type, object_id = data.pop("object_type"), data.pop("object_id")
        merchant_id, livemode = data.pop("merchant_id"), data.pop("livemode")
        internal = data.pop("internal", None)
        internal = internal if isinstance(internal, dict) else {}
        shown = data.get("object")
        if not isinstance(shown, dict):
            shown = {"id": object_id, "object": object_type, "livemode": bool(livemode), **data}
        event = ReceivedEvent(
            id=message["id"],
            type=message["type"],
            merchant_id=merchant_id,
            livemode=bool(livemode),
            object_type=object_type,
            object_id=object_id,
            sequence=int(message.get("sequence") or 0),
            object=shown,
            created_at=datetime.fromisoformat(message["created"]).isoformat(),
            psp_reference=str(internal.get("psp_reference") or ""),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if event.type not in EVENT_TYPES or not isinstance(event.id, str) or len(event.id) > 40:
        return None
    return event


def _takes(event: str, endpoint: str) -> str:
    """The subscription rule, written once for the statements that fan events out: an enabled
    endpoint of the event's merchant and mode takes an event of a type it names, or every
    event if it names `*`."""
    return (
        f"{endpoint}.merchant_id = {event}.merchant_id AND {endpoint}.livemode = {event}.livemode"
        f" AND {endpoint}.status = '{EndpointStatus.ENABLED}'"
        f" AND ({event}.type = ANY({endpoint}.enabled_events)"
        f" OR '{ALL_EVENTS}' = ANY({endpoint}.enabled_events))"
    )


# The status a delivery asked for again goes back to, whatever it was.
_REDELIVERED = {move(status, Action.REDELIVER) for status in DeliveryStatus}.pop()

# One statement for a batch (autocommit, one round trip): the new events, and for each one a
# delivery per enabled endpoint of its merchant and mode that subscribes to its type; if any
# delivery was made, the deliverers' wake-up, sent as the statement commits. An event received
# before writes nothing (the broker delivers at least once).
_INTAKE = text(
    f"""
    WITH new AS (
      INSERT INTO webhook.events
        (id, type, merchant_id, livemode, object_type, object_id, sequence, object, created_at,
         traceparent, psp_reference)
      SELECT id, type, merchant_id, livemode, object_type, object_id, sequence, object,
             created_at, nullif(traceparent, ''), nullif(psp_reference, '')
      FROM jsonb_to_recordset(CAST(:batch AS jsonb)) AS x(
        id text, type text, merchant_id text, livemode boolean, object_type text,
        object_id text, sequence bigint, object jsonb, created_at timestamptz,
        traceparent text, psp_reference text)
      ON CONFLICT (id) DO NOTHING
      RETURNING id, type, merchant_id, livemode
    ), fanned AS (
      INSERT INTO webhook.deliveries (event_id, endpoint_id)
      SELECT new.id, e.id FROM new
      JOIN webhook.webhook_endpoints e ON {_takes("new", "e")}
      RETURNING 1
    ), woken AS (
      SELECT pg_notify(:wake_channel, '') WHERE EXISTS (SELECT 1 FROM fanned)
    )
    SELECT (SELECT count(*) FROM new) AS events, (SELECT count(*) FROM woken) AS woken
    """  # noqa: S608 - fixed fragments, never input
)


class EventIntake:
    """The RabbitMQ handler. Messages arriving together are written in one statement
    (coalesced); each is acked only after that statement committed."""

    def __init__(
        self,
        direct: DirectSql,
        max_batch: int = 500,
        successes_stored: Callable[[list[tuple[str, dict, str]]], None] | None = None,
    ):
        self._direct = direct
        self._writes = Coalescer(self._write_batch, max_batch)
        # Told the payments' successes each batch stored (PSP reference, object, traceparent):
        # the inbound side may be waiting for them (webhook_svc.inbound.recorded).
        self._successes_stored = successes_stored

    async def receive(self, delivery: Delivery) -> Verdict:
        event = parse_event(delivery.body)
        if event is None:
            EVENTS_RECEIVED.labels("unreadable").inc()
            log.warning("webhook_event_unreadable", queue=delivery.queue)
            return Verdict.REJECT
        annotate(tenant=event.merchant_id)
        annotate_object(event.object_id)
        # Its deliveries continue this message's trace (the consumer span is current here).
        event = dataclasses.replace(event, traceparent=current_traceparent())
        await self._writes.submit(event)  # a failed write raises: the consumer requeues it
        return Verdict.ACK

    async def _write_batch(self, batch: list[ReceivedEvent]) -> list[None]:
        new = await self._write(batch)
        if self._successes_stored is not None:
            self._successes_stored(
                [
                    (e.psp_reference, e.object, e.traceparent)
                    for e in batch
                    if e.type == SUCCEEDED and e.psp_reference
                ]
            )
        EVENTS_RECEIVED.labels("new").inc(new)
        EVENTS_RECEIVED.labels("duplicate").inc(len(batch) - new)
        return [None] * len(batch)

    async def _write(self, batch: Sequence[ReceivedEvent]) -> int:
        unique = list({event.id: vars(event) for event in batch}.values())
        counts = await self._direct.one(
            _INTAKE, {"batch": json.dumps(unique), "wake_channel": WAKE_CHANNEL}
        )
        assert counts is not None  # a SELECT of counts always answers one row
        return counts["events"]


class EventStore:
    """The merchant's side: events as the API shows them, redelivery and recovery."""

    def __init__(
        self, engine: AsyncEngine, recover_window_days: int = 30, lists: AsyncEngine | None = None
    ):
        self._engine = engine
        self._reads = autocommit(engine)
        self._lists = autocommit(lists or engine)  # a replica's, maybe a moment behind
        self._recover_window_days = recover_window_days

    async def page(
        self, merchant: Merchant, limit: int, starting_after: str, event_type: str
    ) -> tuple[Sequence[Row], bool]:
        filters = [events.c.type == event_type] if event_type else []
        async with self._lists.connect() as connection:
            return await newest_first_page(
                connection, events, merchant, limit, starting_after, "event", *filters
            )

    async def get(self, merchant: Merchant, event_id: str) -> tuple[Row, Sequence[Row]]:
        """The event and its delivery attempts, oldest first."""
        async with self._reads.connect() as connection:
            event = await _owned_event(connection, merchant, event_id)
            attempts = (
                await connection.execute(
                    select(delivery_attempts)
                    .where(delivery_attempts.c.event_id == event_id)
                    .order_by(delivery_attempts.c.at, delivery_attempts.c.id)
                )
            ).all()
        return event, attempts

    async def redeliver(self, merchant: Merchant, event_id: str) -> int:
        """Sends the event again, now, to every enabled endpoint that subscribes to it; a new
        round of attempts, the same `webhook-id`."""
        async with self._engine.begin() as connection:
            await _owned_event(connection, merchant, event_id)
            scheduled = await _schedule(
                connection, "ev.id = :event_id", {"event_id": event_id}, merchant
            )
        return scheduled

    async def recover(self, merchant: Merchant, endpoint_id: str, since: datetime) -> int:
        """Sends, in order, every event since `since` that the endpoint subscribes to and has
        not received (never sent, still failing, or given up)."""
        async with self._engine.begin() as connection:
            too_old = (
                await connection.execute(
                    text("SELECT :since < now() - make_interval(days => :days)"),
                    {"since": since, "days": self._recover_window_days},
                )
            ).scalar_one()
            if too_old:
                raise InvalidArgument.for_field(
                    "since",
                    "invalid_timestamp",
                    f"since must be within the last {self._recover_window_days} days",
                )
            return await _schedule(
                connection,
                "ev.created_at >= :since AND e.id = :endpoint_id",
                {"since": since, "endpoint_id": endpoint_id},
                merchant,
                skip_received=True,
            )


async def _owned_event(connection: AsyncConnection, merchant: Merchant, event_id: str) -> Row:
    """The merchant's event; another's is as good as missing."""
    event = (await connection.execute(owned_by(events, event_id, merchant))).first()
    if event is None:
        raise NotFound("no such event", reason="resource_missing")
    return event


async def _schedule(
    connection: AsyncConnection,
    which: str,
    params: dict,
    merchant: Merchant,
    skip_received: bool = False,
) -> int:
    """Makes the deliveries of the chosen events due now, one per subscribing endpoint, in
    the events' order (their due times follow it, and due deliveries are sent oldest first).
    A fresh round: its attempts count from one again. An object's delivery that a replica is
    sending holds its lease; it and the object's later events fall due once the lease ends,
    so none of them overtakes it."""
    received = (
        f"AND d.status IS DISTINCT FROM '{DeliveryStatus.SUCCEEDED}'" if skip_received else ""
    )
    rows = await connection.execute(
        text(
            f"""
            INSERT INTO webhook.deliveries (event_id, endpoint_id, next_attempt_at)
            SELECT ev.id, e.id,
                   greatest(now(), max(d.leased_until) OVER (
                     PARTITION BY e.id, ev.object_id ORDER BY ev.created_at, ev.sequence, ev.id))
                   + make_interval(secs => 0.000001 * row_number() OVER (
                     ORDER BY ev.created_at, ev.sequence, ev.id))
            FROM webhook.events ev
            JOIN webhook.webhook_endpoints e ON {_takes("ev", "e")}
            LEFT JOIN webhook.deliveries d ON d.event_id = ev.id AND d.endpoint_id = e.id
            WHERE ev.merchant_id = :merchant_id AND ev.livemode = :livemode AND {which}
              {received}
            ON CONFLICT ON CONSTRAINT deliveries_one_per_endpoint DO UPDATE
              -- One being sent right now keeps its lease, so it is not sent twice at once,
              -- but loses its token: that send's outcome no longer settles it, and it is
              -- sent again once the lease lapses (its due time above).
              SET status = '{_REDELIVERED}', attempts = 0,
                  next_attempt_at = EXCLUDED.next_attempt_at, lease_token = NULL
            RETURNING 1
            """  # noqa: S608 - `which`, `received` and the rule are fixed fragments, never input
        ),
        {**params, "merchant_id": merchant.id, "livemode": merchant.livemode},
    )
    scheduled = len(rows.all())
    if scheduled:
        await notify(connection, WAKE_CHANNEL, "")
    return scheduled
