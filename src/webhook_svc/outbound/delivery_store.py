"""The deliveries' persistence, as the deliverer sees it: claim what is due (leased to this
replica), record what the sends came to, and say when the next one falls due. A `Protocol`,
its PostgreSQL implementation, and the dataclasses both speak (the in-memory twin is in
memory_delivery_store; one contract suite holds both to the same rules)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Row, Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.outbox import event_values, snapshot
from webhook_svc.domain.endpoint_health import DisabledReason, EndpointStatus
from webhook_svc.domain.status import TRANSITIONS, UNSENT, Result, sendable


@dataclass(frozen=True)
class DueDelivery:
    """A claimed delivery, with what sending it needs: the event, the endpoint's URL and
    its secrets (sealed), and the database's time of the claim."""

    id: int
    attempts: int  # made before this one
    next_attempt_at: datetime
    lease_token: str
    event_id: str
    type: str
    created_at: datetime
    object: dict
    sequence: int
    object_id: str
    merchant_id: str
    traceparent: str | None
    endpoint_id: str
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    now: datetime


@dataclass(frozen=True)
class Outcome:
    """What one send came to, as recorded."""

    delivery_id: int
    lease_token: str
    event_id: str
    endpoint_id: str
    url: str
    attempt: int
    kind: Result
    next_in_seconds: float | None
    status_code: int | None
    duration_ms: int
    error: str | None


@dataclass(frozen=True)
class DisabledEndpoint:
    id: str
    reason: DisabledReason


class DeliveryStore(Protocol):
    async def claim(
        self, limit: int, per_endpoint: int, busy: Sequence[str], lease_seconds: float, token: str
    ) -> list[DueDelivery]:
        """Leases up to `limit` due deliveries of enabled endpoints to `token`, oldest due
        first: at most `per_endpoint` of one endpoint, none of the `busy` endpoints', none
        while an earlier event of its object to its endpoint is still pending."""
        ...

    async def record(
        self, outcomes: Sequence[Outcome], disable_after_seconds: float
    ) -> list[DisabledEndpoint]:
        """Writes the outcomes in one transaction: each delivery's move (only while its lease
        token holds), each attempt's record, the endpoints' failure tracking; disables the
        endpoints `disabled_reason` gives up (with a `webhook_endpoint.disabled` event) and
        answers them."""
        ...

    async def seconds_to_next_due(self) -> float | None:
        """Until the earliest pending delivery not due yet falls due (None: there is none)."""
        ...

    async def pending_count(self) -> int: ...


def _sql_list(values) -> str:
    """`'a', 'b'`: enum values for an SQL list (never input)."""
    return ", ".join(f"'{value}'" for value in values)


_SENDABLE = _sql_list(sendable())
_ENABLED = EndpointStatus.ENABLED
# The transition table, rendered: a send's result moves the delivery from a source status to
# its target, and applies to no other status.
_MOVES = [
    (result, source, target) for result in Result for source, target in TRANSITIONS[result].items()
]
_TARGET = " ".join(
    f"WHEN o.kind = '{result}' AND d.status = '{source}' THEN '{target}'"
    for result, source, target in _MOVES
)
_MOVABLE = ", ".join(f"('{result}', '{source}')" for result, source, _ in _MOVES)
_UNSENT = _sql_list(UNSENT)
_FAILED = _sql_list((Result.FAILED, Result.DEAD, Result.GONE))
# endpoint_health.disabled_reason in SQL (`e.failing_since` is the value before this batch).
_DISABLED_REASON = f"""CASE WHEN f.gone THEN '{DisabledReason.GONE}'
                           WHEN e.failing_since < now() - make_interval(secs => :disable_after)
                           THEN '{DisabledReason.FAILING}' END"""

# Claims due deliveries of enabled endpoints, oldest due first, leasing them to this replica,
# with what sending needs (the event, the endpoint's URL and secrets). At most `per_endpoint`
# of one endpoint per claim (twice its concurrency), none of the endpoints this replica holds
# that many of already: a slow endpoint's backlog never takes the others' places.
# One object's events go to an endpoint in sequence order: none is claimed while an earlier
# one of its object to that endpoint is still pending (in flight, or waiting for a retry).
# Due times and this replica's per-object queue cannot say it alone: a backlog is due at one
# instant, and an earlier event claimed before a stop (SIGSTOP, a hung host) comes back unsent
# or failed after it while the later one, claimed since, goes.
_CLAIM = text(
    f"""
    WITH candidates AS (
      SELECT d.id, d.endpoint_id, d.next_attempt_at FROM webhook.deliveries d
      JOIN webhook.webhook_endpoints e ON e.id = d.endpoint_id
      JOIN webhook.events ev ON ev.id = d.event_id
      WHERE d.status IN ({_SENDABLE}) AND d.next_attempt_at <= now()
        AND (d.leased_until IS NULL OR d.leased_until < now())
        AND e.status = '{_ENABLED}' AND d.endpoint_id <> ALL(CAST(:busy AS text[]))
        AND NOT EXISTS (
          SELECT 1 FROM webhook.events earlier
          JOIN webhook.deliveries waiting
            ON waiting.event_id = earlier.id AND waiting.endpoint_id = d.endpoint_id
          WHERE earlier.object_id = ev.object_id AND earlier.object_type = ev.object_type
            AND earlier.merchant_id = ev.merchant_id AND earlier.livemode = ev.livemode
            AND (earlier.sequence, earlier.created_at, earlier.id)
                < (ev.sequence, ev.created_at, ev.id)
            AND waiting.status IN ({_SENDABLE}))
      ORDER BY d.next_attempt_at, d.id
      LIMIT 4 * :limit
    ), ranked AS (
      SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS n
      FROM candidates
    ), due AS (
      SELECT d.id FROM webhook.deliveries d
      WHERE d.id IN (SELECT id FROM ranked WHERE n <= :per_endpoint)
        AND d.status IN ({_SENDABLE}) AND (d.leased_until IS NULL OR d.leased_until < now())
      ORDER BY d.next_attempt_at, d.id
      LIMIT :limit
      FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE webhook.deliveries d
    SET leased_until = now() + make_interval(secs => :lease), lease_token = :token
    FROM due, webhook.events ev, webhook.webhook_endpoints e
    WHERE d.id = due.id AND ev.id = d.event_id AND e.id = d.endpoint_id
    RETURNING d.id, d.attempts, d.next_attempt_at, d.lease_token,
              ev.id AS event_id, ev.type, ev.created_at, ev.object, ev.sequence,
              ev.object_id, ev.merchant_id, ev.traceparent,
              e.id AS endpoint_id, e.url, e.secret, e.previous_secret,
              e.previous_secret_expires_at, now() AS now
    """  # noqa: S608 - enum values, never input
)

_RECORD = text(
    f"""
    WITH o AS (
      SELECT * FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS x(
        delivery_id bigint, lease_token text, event_id text, endpoint_id text, url text,
        attempt int, kind text, next_in_seconds float8, status_code int, duration_ms int,
        error text)
    ), deliveries AS (
      UPDATE webhook.deliveries d SET
        status = CASE {_TARGET} END,
        attempts = d.attempts + CASE WHEN o.kind IN ({_UNSENT}) THEN 0 ELSE 1 END,
        next_attempt_at = CASE WHEN o.next_in_seconds IS NULL THEN d.next_attempt_at
                          ELSE now() + make_interval(secs => o.next_in_seconds) END,
        delivered_at = CASE o.kind WHEN '{Result.SUCCEEDED}' THEN now() ELSE d.delivered_at END,
        last_status_code = coalesce(o.status_code, d.last_status_code),
        last_error = CASE WHEN o.kind IN ({_UNSENT}) THEN d.last_error ELSE o.error END,
        leased_until = NULL, lease_token = NULL
      FROM o WHERE d.id = ANY(ARRAY(SELECT delivery_id FROM o))  -- by index, see inbox._SETTLE
        AND d.id = o.delivery_id AND d.lease_token = o.lease_token
        AND (o.kind, d.status) IN ({_MOVABLE})
      RETURNING d.id
    ), attempts AS (
      INSERT INTO webhook.delivery_attempts
        (event_id, endpoint_id, url, attempt, status_code, duration_ms, error)
      SELECT event_id, endpoint_id, url, attempt, status_code, duration_ms, error
      FROM o WHERE kind NOT IN ({_UNSENT})
      RETURNING 1
    ), healthy AS (
      UPDATE webhook.webhook_endpoints e SET failing_since = NULL
      WHERE e.failing_since IS NOT NULL
        AND e.id IN (SELECT endpoint_id FROM o WHERE kind = '{Result.SUCCEEDED}')
      RETURNING 1
    ), failing AS (
      UPDATE webhook.webhook_endpoints e SET
        failing_since = coalesce(e.failing_since, now()),
        status = CASE WHEN ({_DISABLED_REASON}) IS NOT NULL
                      THEN '{EndpointStatus.DISABLED}' ELSE e.status END,
        disabled_reason = coalesce({_DISABLED_REASON}, e.disabled_reason),
        updated_at = now()
      FROM (SELECT endpoint_id, bool_or(kind = '{Result.GONE}') AS gone FROM o
            WHERE kind IN ({_FAILED})
              AND endpoint_id NOT IN (SELECT endpoint_id FROM o WHERE kind = '{Result.SUCCEEDED}')
            GROUP BY endpoint_id) f
      WHERE e.id = f.endpoint_id AND e.status = '{_ENABLED}'
      RETURNING e.*
    )
    SELECT * FROM failing WHERE status = '{EndpointStatus.DISABLED}'
    """  # noqa: S608 - enum values, never input
)

_NEXT_DUE = text(
    "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM webhook.deliveries"
    f" WHERE status IN ({_SENDABLE}) AND next_attempt_at > now()"  # noqa: S608 - enum values
)
_PENDING = text(
    f"SELECT count(*) FROM webhook.deliveries WHERE status IN ({_SENDABLE})"  # noqa: S608
)


class PostgresDeliveryStore:
    """webhook.deliveries, delivery_attempts and the endpoints' failure tracking."""

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Table,
        public_key_of: Callable[[Row], str],
        secret_columns: Sequence[str],
    ):
        self._engine = engine
        self._outbox = outbox
        self._public_key_of = public_key_of
        self._secret_columns = secret_columns

    async def claim(
        self, limit: int, per_endpoint: int, busy: Sequence[str], lease_seconds: float, token: str
    ) -> list[DueDelivery]:
        async with self._engine.begin() as connection:
            rows = (
                await connection.execute(
                    _CLAIM,
                    {
                        "limit": limit,
                        "per_endpoint": per_endpoint,
                        "busy": list(busy),
                        "lease": lease_seconds,
                        "token": token,
                    },
                )
            ).all()
        claimed = [DueDelivery(**row._mapping) for row in rows]
        return sorted(claimed, key=lambda d: (d.next_attempt_at, d.sequence, d.id))

    async def record(
        self, outcomes: Sequence[Outcome], disable_after_seconds: float
    ) -> list[DisabledEndpoint]:
        async with self._engine.begin() as connection:
            disabled = (
                await connection.execute(
                    _RECORD,
                    {
                        "outcomes": json.dumps([asdict(o) for o in outcomes]),
                        "disable_after": disable_after_seconds,
                    },
                )
            ).all()
            if disabled:
                await connection.execute(
                    self._outbox.insert(),
                    [self._disabled_event(row) for row in disabled],
                )
        return [DisabledEndpoint(row.id, DisabledReason(row.disabled_reason)) for row in disabled]

    async def seconds_to_next_due(self) -> float | None:
        async with self._engine.connect() as connection:
            wait = (await connection.execute(_NEXT_DUE)).scalar_one()
        return None if wait is None else float(wait)

    async def pending_count(self) -> int:
        async with self._engine.connect() as connection:
            return (await connection.execute(_PENDING)).scalar_one()

    def _disabled_event(self, endpoint: Row) -> dict:
        """`webhook_endpoint.disabled`, for the merchant's other endpoints: the endpoint as
        GET /v1/webhook_endpoints/{id} shows it (never its secrets)."""
        return event_values(
            event_type="webhook_endpoint.disabled",
            aggregate_type="webhook_endpoint",
            aggregate_id=endpoint.id,
            payload=snapshot(
                {**endpoint._mapping, "public_key": self._public_key_of(endpoint)},
                *self._secret_columns,
            ),
        )
