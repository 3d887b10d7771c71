"""Sends due deliveries to merchants' endpoints. Any number of replicas share the work: a
delivery is leased in the statement that claims it (SKIP LOCKED), so one event is never sent
to one endpoint twice at the same time; a replica that dies mid-send leaves a lease that
lapses, and the delivery is sent again with the same `webhook-id` (at least once).

One object's events go to one endpoint in sequence order: the claim takes none while an
earlier one of its object to that endpoint is pending (being sent, or waiting for a retry).

A replica keeps up to `max_in_flight` sends going, at most `per_endpoint` to one endpoint,
started in the order they fell due; each endpoint has its own circuit breaker and every send
its timeout, so one dead endpoint cannot slow the others. Outcomes are written in batches:
the delivery's next step, the attempt's record, and the endpoint's failure tracking."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import aiohttp
import pybreaker
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from paymesh.platform.http_spans import aiohttp_tracing
from paymesh.platform.notifications import listen
from paymesh.platform.outbox import event_values, snapshot
from paymesh.platform.tracing import annotate, annotate_object, continued_span, record_failure
from paymesh.platform.wire import json_timestamp
from webhook_svc.domain.rules import retry_delay
from webhook_svc.outbound import signing
from webhook_svc.outbound.destinations import (
    AddressPolicy,
    DestinationRefused,
    GuardedResolver,
    is_ip_literal,
)
from webhook_svc.outbound.endpoints import EndpointStore
from webhook_svc.outbound.events import WAKE_CHANNEL
from webhook_svc.outbound.metrics import (
    CIRCUIT_STATE,
    DEAD_LETTERS,
    DELIVERIES,
    DELIVERY_DURATION,
    DELIVERY_LAG,
    PENDING,
)

log = structlog.get_logger(__name__)

_CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}


@dataclass(frozen=True)
class DeliveryPolicy:
    schedule: Sequence[float]
    timeout_seconds: float = 10.0
    max_in_flight: int = 200
    per_endpoint: int = 8
    breaker_fail_max: int = 5
    breaker_reset_seconds: float = 30.0
    retry_after_max_seconds: float = 86400.0
    disable_after_seconds: float = 5 * 86400.0
    idle_seconds: float = 1.0


@dataclass(frozen=True)
class Outcome:
    """What one send came to; `kind` is the metric's result."""

    delivery_id: int
    lease_token: str
    event_id: str
    endpoint_id: str
    url: str
    attempt: int
    kind: str  # succeeded | failed | dead | gone | deferred
    next_in_seconds: float | None
    status_code: int | None
    duration_ms: int
    error: str | None


class _Breaker(pybreaker.CircuitBreakerListener):
    def state_change(self, breaker, old, new):
        CIRCUIT_STATE.labels(breaker.name).set(_CIRCUIT_STATES[new.name])
        log.warning("webhook_circuit_changed", endpoint=breaker.name, state=new.name)


class _EndpointFailed(Exception):
    pass


class _Gates:
    """A semaphore of `size` per key, made on first use and dropped once nobody holds or
    awaits it; waiters go in the order they came."""

    def __init__(self, size: int):
        self._size = size
        self._gates: dict[object, tuple[asyncio.Semaphore, int]] = {}

    def users(self, key: object) -> int:
        """How many hold or await the key's gate."""
        return self._gates.get(key, (None, 0))[1]

    def busy(self, limit: int) -> list:
        """The keys held or awaited by `limit` users or more."""
        return [key for key, (_, users) in self._gates.items() if users >= limit]

    @contextlib.asynccontextmanager
    async def held(self, key: object):
        gate, users = self._gates.get(key) or (asyncio.Semaphore(self._size), 0)
        self._gates[key] = (gate, users + 1)
        try:
            async with gate:
                yield
        finally:
            gate, users = self._gates[key]
            if users == 1:
                del self._gates[key]
            else:
                self._gates[key] = (gate, users - 1)


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
    """
    WITH candidates AS (
      SELECT d.id, d.endpoint_id, d.next_attempt_at FROM webhook.deliveries d
      JOIN webhook.webhook_endpoints e ON e.id = d.endpoint_id
      JOIN webhook.events ev ON ev.id = d.event_id
      WHERE d.status = 'pending' AND d.next_attempt_at <= now()
        AND (d.leased_until IS NULL OR d.leased_until < now())
        AND e.status = 'enabled' AND d.endpoint_id <> ALL(CAST(:busy AS text[]))
        AND NOT EXISTS (
          SELECT 1 FROM webhook.events earlier
          JOIN webhook.deliveries waiting
            ON waiting.event_id = earlier.id AND waiting.endpoint_id = d.endpoint_id
          WHERE earlier.object_id = ev.object_id AND earlier.object_type = ev.object_type
            AND earlier.merchant_id = ev.merchant_id AND earlier.livemode = ev.livemode
            AND (earlier.sequence, earlier.created_at, earlier.id)
                < (ev.sequence, ev.created_at, ev.id)
            AND waiting.status = 'pending')
      ORDER BY d.next_attempt_at, d.id
      LIMIT 4 * :limit
    ), ranked AS (
      SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS n
      FROM candidates
    ), due AS (
      SELECT d.id FROM webhook.deliveries d
      WHERE d.id IN (SELECT id FROM ranked WHERE n <= :per_endpoint)
        AND d.status = 'pending' AND (d.leased_until IS NULL OR d.leased_until < now())
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
    """
)

_RECORD = text(
    """
    WITH o AS (
      SELECT * FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS x(
        delivery_id bigint, lease_token text, event_id text, endpoint_id text, url text,
        attempt int, kind text, next_in_seconds float8, status_code int, duration_ms int,
        error text)
    ), deliveries AS (
      UPDATE webhook.deliveries d SET
        status = CASE o.kind WHEN 'succeeded' THEN 'succeeded'
                             WHEN 'dead' THEN 'dead' WHEN 'gone' THEN 'dead' ELSE 'pending' END,
        attempts = d.attempts + CASE o.kind WHEN 'deferred' THEN 0 ELSE 1 END,
        next_attempt_at = CASE WHEN o.next_in_seconds IS NULL THEN d.next_attempt_at
                          ELSE now() + make_interval(secs => o.next_in_seconds) END,
        delivered_at = CASE o.kind WHEN 'succeeded' THEN now() ELSE d.delivered_at END,
        last_status_code = coalesce(o.status_code, d.last_status_code),
        last_error = CASE o.kind WHEN 'deferred' THEN d.last_error ELSE o.error END,
        leased_until = NULL, lease_token = NULL
      FROM o WHERE d.id = ANY(ARRAY(SELECT delivery_id FROM o))  -- by index, see inbound._SETTLE
        AND d.id = o.delivery_id AND d.lease_token = o.lease_token
      RETURNING d.id
    ), attempts AS (
      INSERT INTO webhook.delivery_attempts
        (event_id, endpoint_id, url, attempt, status_code, duration_ms, error)
      SELECT event_id, endpoint_id, url, attempt, status_code, duration_ms, error
      FROM o WHERE kind <> 'deferred'
      RETURNING 1
    ), healthy AS (
      UPDATE webhook.webhook_endpoints e SET failing_since = NULL
      WHERE e.failing_since IS NOT NULL
        AND e.id IN (SELECT endpoint_id FROM o WHERE kind = 'succeeded')
      RETURNING 1
    ), failing AS (
      UPDATE webhook.webhook_endpoints e SET
        failing_since = coalesce(e.failing_since, now()),
        status = CASE WHEN f.gone OR e.failing_since < now() - make_interval(secs => :disable_after)
                      THEN 'disabled' ELSE e.status END,
        disabled_reason = CASE WHEN f.gone THEN 'gone'
                               WHEN e.failing_since < now() - make_interval(secs => :disable_after)
                               THEN 'failing' ELSE e.disabled_reason END,
        updated_at = now()
      FROM (SELECT endpoint_id, bool_or(kind = 'gone') AS gone FROM o
            WHERE kind IN ('failed', 'dead', 'gone')
              AND endpoint_id NOT IN (SELECT endpoint_id FROM o WHERE kind = 'succeeded')
            GROUP BY endpoint_id) f
      WHERE e.id = f.endpoint_id AND e.status = 'enabled'
      RETURNING e.*
    )
    SELECT * FROM failing WHERE status = 'disabled'
    """
)

_NEXT_DUE = text(
    "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM webhook.deliveries"
    " WHERE status = 'pending' AND next_attempt_at > now()"
)
_PENDING = text("SELECT count(*) FROM webhook.deliveries WHERE status = 'pending'")


class Sender:
    """One HTTP POST of a signed event, never following a redirect, to an allowed address."""

    def __init__(self, policy: AddressPolicy, timeout_seconds: float, user_agent: str):
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._policy),
                use_dns_cache=False,  # every new connection is resolved and checked again
                limit=0,
                limit_per_host=32,
                keepalive_timeout=30,
            )
            # trust_env stays off: a proxy from the environment would hide the destination.
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, trace_configs=aiohttp_tracing()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, float | None, str | None]:
        """(status code, Retry-After seconds, error): a status, or an error that says why
        there was none."""
        host = URL(url).host or ""
        try:
            if is_ip_literal(host):  # aiohttp asks no resolver for these
                self._policy.check_addresses(host, [host])
            async with self._client().post(
                url,
                data=body,
                headers={
                    **headers,
                    "content-type": "application/json",
                    "user-agent": self._user_agent,
                },
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                # A small answer is read to its end, so the connection is reused; a large or
                # unsized one is not read at all (the connection is closed instead).
                if response.content_length is not None and response.content_length <= 65536:
                    await response.read()
                else:
                    response.close()
                return response.status, _retry_after(response.headers.get("retry-after")), None
        except DestinationRefused as refused:
            return None, None, f"destination_refused: {refused}"
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, DestinationRefused):
                return None, None, f"destination_refused: {error.os_error}"
            return None, None, "connection_failed"
        except TimeoutError:
            return None, None, "timeout"
        except aiohttp.ClientError as error:
            return None, None, f"connection_error: {type(error).__name__}"


class Deliverer:
    def __init__(
        self,
        engine: AsyncEngine,
        endpoints: EndpointStore,
        sender: Sender,
        policy: DeliveryPolicy,
        outbox_table,
    ):
        self._engine = engine
        self._endpoints = endpoints
        self._sender = sender
        self._policy = policy
        self._outbox = outbox_table
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(policy.max_in_flight)
        self._in_flight = 0
        self._per_endpoint = _Gates(policy.per_endpoint)
        self._per_object = _Gates(1)
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        # A replica that died holding a delivery is replaced this long after it took it. A
        # send starts only while its whole timeout fits in what is left of the lease, so a
        # delivery is never sent by two at once (one that waited too long behind its endpoint's
        # others goes back, unsent, to be claimed again).
        self._lease_seconds = 2 * policy.timeout_seconds + 5

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(listen(self._engine, WAKE_CHANNEL, self._woken, self._woken)),
            asyncio.create_task(self._record_forever()),
            asyncio.create_task(self._count_pending_forever()),
        ]
        try:
            await self._claim_forever()
        finally:
            for task in tasks:
                task.cancel()
            await self._flush()  # outcomes of finished sends are not thrown away
            await self._sender.close()

    def _woken(self, *_args) -> None:
        self._wake.set()

    async def _claim_forever(self) -> None:
        while True:
            # Cleared before claiming: a send that ends or a delivery that arrives while the
            # claim runs wakes the next wait at once.
            self._wake.clear()
            room = self._policy.max_in_flight - self._in_flight
            claimed = []
            if room > 0:
                try:
                    claimed = await self._claim(room)
                except Exception as error:  # noqa: BLE001 - the database comes back
                    log.warning("webhook_claim_failed", error=type(error).__name__)
                    await asyncio.sleep(1.0)
                    continue
            lease_ends = time.monotonic() + self._lease_seconds - 1.0  # 1 s for clock skew
            for row in claimed:
                self._in_flight += 1
                asyncio.create_task(self._deliver(row, lease_ends))
            if len(claimed) < room:
                wait = await self._until_next_due() if not claimed else self._policy.idle_seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                await asyncio.sleep(0.002)  # sends ending together share the next claim
            elif room <= 0:
                await asyncio.sleep(0.01)

    async def _until_next_due(self) -> float:
        """Seconds until the next retry falls due (new deliveries wake the loop at once)."""
        try:
            async with self._engine.connect() as connection:
                wait = (await connection.execute(_NEXT_DUE)).scalar_one()
        except Exception:  # noqa: BLE001 - the claim that follows says what is wrong
            return self._policy.idle_seconds
        if wait is None:
            return self._policy.idle_seconds
        return min(self._policy.idle_seconds, max(0.02, float(wait)))

    async def _claim(self, limit: int):
        async with self._engine.begin() as connection:
            rows = (
                await connection.execute(
                    _CLAIM,
                    {
                        "limit": min(limit, 500),
                        "per_endpoint": self._policy.per_endpoint * 2,
                        "busy": self._per_endpoint.busy(2 * self._policy.per_endpoint),
                        "lease": self._lease_seconds,
                        "token": secrets.token_hex(8),
                    },
                )
            ).all()
        return sorted(rows, key=lambda r: (r.next_attempt_at, r.sequence, r.id))

    async def _deliver(self, row, lease_ends: float) -> None:
        # In the trace of the change that made the event; the HTTP client span below it sends
        # its traceparent to the merchant.
        attributes = {
            "tenant": row.merchant_id,
            "webhook.event.id": row.event_id,
            "webhook.event.type": row.type,
            "webhook.endpoint.id": row.endpoint_id,
            "webhook.attempt": row.attempts + 1,
        }
        with continued_span("webhook.deliver", row.traceparent, attributes):
            annotate_object(row.object_id)
            await self._deliver_in_span(row, lease_ends)

    async def _deliver_in_span(self, row, lease_ends: float) -> None:
        try:
            # One object's events reach one endpoint one after the other, in the order they
            # fell due; other objects' go alongside, up to the endpoint's limit.
            async with (
                self._per_object.held((row.endpoint_id, row.object_id)),
                self._per_endpoint.held(row.endpoint_id),
            ):
                if time.monotonic() + self._policy.timeout_seconds > lease_ends:
                    outcome = self._outcome(row, row.attempts + 1, "deferred", 0, None, 0, None)
                else:
                    outcome = await self._send(row)
        except Exception:  # noqa: BLE001 - the lease lapses and another round sends it
            log.exception("webhook_delivery_crashed", event_id=row.event_id)
            return
        finally:
            self._in_flight -= 1
            if self._per_endpoint.users(row.endpoint_id) <= self._policy.per_endpoint:
                self._wake.set()  # this endpoint's queue is half empty: claim its next ones
        DELIVERIES.labels(outcome.kind).inc()
        _log_outcome(outcome)
        if outcome.kind in ("dead", "gone"):
            DEAD_LETTERS.inc()
        if outcome.kind == "succeeded":
            DELIVERY_LAG.observe(max(0.0, time.time() - row.created_at.timestamp()))
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    async def _send(self, row) -> Outcome:
        attempt = row.attempts + 1
        breaker = self._breaker(row.endpoint_id)
        body = _body(row)
        timestamp = int(time.time())
        in_use = self._endpoints.signing_secrets(
            row.endpoint_id,
            row.secret,
            row.previous_secret,
            row.previous_secret_expires_at,
            row.now,
        )
        headers = signing.headers(in_use, row.event_id, timestamp, body)
        started = time.monotonic()
        status = retry_after = error = None
        try:
            with breaker.calling():
                status, retry_after, error = await self._sender.post(row.url, body, headers)
                if status is None or not 200 <= status < 300:
                    raise _EndpointFailed
        except pybreaker.CircuitBreakerError:
            if status is None and error is None:  # open: nothing was sent
                return self._outcome(row, attempt, "deferred", breaker.reset_timeout, None, 0, None)
        except _EndpointFailed:
            pass
        elapsed = time.monotonic() - started
        DELIVERY_DURATION.observe(elapsed)
        duration_ms = int(elapsed * 1000)
        if status is not None and 200 <= status < 300:
            return self._outcome(row, attempt, "succeeded", None, status, duration_ms, None)
        if status == 410:
            return self._outcome(row, attempt, "gone", None, status, duration_ms, "gone")
        error = error or f"http_{status}"
        wait = retry_delay(attempt, self._policy.schedule)
        if wait is None:
            return self._outcome(row, attempt, "dead", None, status, duration_ms, error)
        if status in (429, 503) and retry_after is not None:
            wait = max(wait, min(retry_after, self._policy.retry_after_max_seconds))
        return self._outcome(row, attempt, "failed", wait, status, duration_ms, error)

    @staticmethod
    def _outcome(row, attempt, kind, next_in, status, duration_ms, error) -> Outcome:
        return Outcome(
            delivery_id=row.id,
            lease_token=row.lease_token,
            event_id=row.event_id,
            endpoint_id=row.endpoint_id,
            url=row.url,
            attempt=attempt,
            kind=kind,
            next_in_seconds=next_in,
            status_code=status,
            duration_ms=duration_ms,
            error=error,
        )

    def _breaker(self, endpoint_id: str) -> pybreaker.CircuitBreaker:
        breaker = self._breakers.get(endpoint_id)
        if breaker is None:
            breaker = pybreaker.CircuitBreaker(
                fail_max=self._policy.breaker_fail_max,
                reset_timeout=self._policy.breaker_reset_seconds,
                listeners=[_Breaker()],
                name=endpoint_id,
            )
            self._breakers[endpoint_id] = breaker
        return breaker

    async def _record_forever(self) -> None:
        while True:
            await self._outcome_ready.wait()
            await asyncio.sleep(0.005)  # outcomes finishing together share a transaction
            await self._flush()

    async def _flush(self) -> None:
        while self._outcomes:
            self._outcome_ready.clear()
            batch, self._outcomes = self._outcomes[:500], self._outcomes[500:]
            try:
                await self._record(batch)
            except Exception as error:  # noqa: BLE001 - the leases lapse: sent again later
                log.warning("webhook_record_failed", error=type(error).__name__, count=len(batch))
                await asyncio.sleep(1.0)
                continue
            if any(o.kind in ("succeeded", "dead") for o in batch):
                self._wake.set()  # the objects' next events may be claimed now

    async def _record(self, batch: Sequence[Outcome]) -> None:
        async with self._engine.begin() as connection:
            disabled = (
                await connection.execute(
                    _RECORD,
                    {
                        "outcomes": json.dumps([asdict(o) for o in batch]),
                        "disable_after": self._policy.disable_after_seconds,
                    },
                )
            ).all()
            if disabled:
                await connection.execute(
                    self._outbox.insert(),
                    [_disabled_event(row, self._endpoints.public_key_of(row)) for row in disabled],
                )
        for row in disabled:
            log.warning("webhook_endpoint_disabled", endpoint=row.id, reason=row.disabled_reason)

    async def _count_pending_forever(self) -> None:
        while True:
            try:
                async with self._engine.connect() as connection:
                    PENDING.set((await connection.execute(_PENDING)).scalar_one())
            except Exception:  # noqa: BLE001, S110 - a gauge; the next round tries again
                pass
            await asyncio.sleep(5.0)


def _log_outcome(outcome: Outcome) -> None:
    """One line per delivery, in its trace; a failed one marks the span failed."""
    fields = {
        "outcome": outcome.kind,
        "event_id": outcome.event_id,
        "endpoint": outcome.endpoint_id,
        "attempt": outcome.attempt,
        "status_code": outcome.status_code,
        "duration_ms": outcome.duration_ms,
    }
    annotate(**{"webhook.outcome": outcome.kind, "http.response.status_code": outcome.status_code})
    if outcome.kind in ("succeeded", "deferred"):
        log.info("webhook_delivery", **fields)
        return
    record_failure(outcome.error or outcome.kind)
    log.warning("webhook_delivery", **fields, error=outcome.error, retry_in=outcome.next_in_seconds)


def _body(row) -> bytes:
    """The delivery's JSON: the same bytes for every attempt of one event. `created` is
    written as GET /v1/events/{id} and every object write theirs."""
    return json.dumps(
        {
            "id": row.event_id,
            "type": row.type,
            "created": json_timestamp(row.created_at),
            "data": {"object": row.object},
            "sequence": row.sequence,
        },
        separators=(",", ":"),
    ).encode()


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (HTTP also allows a date; an endpoint sending one gets the
    schedule's wait)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def _disabled_event(row, public_key: str) -> dict:
    """`webhook_endpoint.disabled`, for the merchant's other endpoints: the endpoint as
    GET /v1/webhook_endpoints/{id} shows it (never its secrets)."""
    return event_values(
        event_type="webhook_endpoint.disabled",
        aggregate_type="webhook_endpoint",
        aggregate_id=row.id,
        payload=snapshot({**row._mapping, "public_key": public_key}, *EndpointStore.SECRET_COLUMNS),
    )
