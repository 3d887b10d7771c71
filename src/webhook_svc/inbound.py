"""Inbound PSP webhooks: `POST /v1/psp/{psp}/webhooks` (PspWebhookService).

The raw body's signature is checked first (nothing is recorded for a request that fails it:
400 missing_signature / invalid_signature / stale_signature). The event then goes into the
inbox (webhook.psp_inbox, one row per PSP event id, counting every delivery of it), and its
facts are applied through the gateway's PspEventService under the webhook service's own
identity. The inbox makes the same event, delivered ten times, applied once; the gateway's
conditional writes make a late or repeated fact change nothing. An event the gateway cannot
apply yet (an operation of paymesh on the payment is in flight, an earlier event has not
come) is answered 503, so the PSP sends it again; one it can never apply is recorded with
its reason and answered 200."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import grpc
import structlog
from google.protobuf import timestamp_pb2
from prometheus_client import Counter, Histogram
from sqlalchemy import text

from paymesh.gateway.v1 import psp_events_pb2, psp_events_pb2_grpc
from paymesh.platform.channels import close_on_shutdown, service_channel
from paymesh.platform.coalesce import Coalescer
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.problems import InvalidArgument, NotFound, Unavailable
from paymesh.platform.server import Resources
from paymesh.platform.tracing import annotate, link_to
from paymesh.webhook.v1 import psp_webhook_pb2, psp_webhook_pb2_grpc
from webhook_svc import psp_events, psp_signatures
from webhook_svc.config import WebhookSettings

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # Envoy refuses larger bodies with 413 before they get here
SIGNATURE_HEADERS = {"stripe": "stripe-signature", "sandbox": "sandbox-signature"}
GATEWAY_TIMEOUT_SECONDS = 5.0
FINAL = ("applied", "already_applied", "ignored")
# What an event's `created` may be: a Unix time from 1970 to the end of year 9999 (what a
# datetime and a protobuf Timestamp can hold; no PSP event is older than the epoch).
LATEST_CREATED = 253402300799

LAG = Histogram(
    "webhook_lag_seconds",
    "From a PSP event's creation (at the PSP) to its being applied to the payment",
    ["psp"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
PSP_EVENTS = Counter(
    "webhook_psp_events_total",
    "PSP webhook requests by PSP and outcome: applied, already_applied, ignored, duplicate "
    "(received before), deferred (answered 503: sent again later), refused (bad, missing or "
    "stale signature, unreadable event)",
    ["psp", "outcome"],
)

_OUTCOMES = {
    psp_events_pb2.PSP_EVENT_OUTCOME_APPLIED: "applied",
    psp_events_pb2.PSP_EVENT_OUTCOME_ALREADY_APPLIED: "already_applied",
    psp_events_pb2.PSP_EVENT_OUTCOME_IGNORED: "ignored",
    psp_events_pb2.PSP_EVENT_OUTCOME_RETRY_LATER: "deferred",
}


def psp_secrets(settings: WebhookSettings) -> dict[str, list[str]]:
    """Each PSP's endpoint secrets (comma-separated: a secret being rolled, and the new one)."""
    return {
        "stripe": [s.strip() for s in settings.stripe_secret.split(",") if s.strip()],
        "sandbox": [s.strip() for s in settings.sandbox_secret.split(",") if s.strip()],
    }


def read_event(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.for_field("body", "invalid_json", "the event is not JSON") from None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and 0 < len(event["id"]) <= 255
        and isinstance(event.get("type"), str)
        and len(event["type"]) <= 100
        and isinstance(event.get("created"), int)
        and not isinstance(event.get("created"), bool)
    ):
        raise InvalidArgument.for_field(
            "body", "invalid_event", "the event needs an id, a type and created"
        )
    if not 0 <= event["created"] <= LATEST_CREATED:
        raise InvalidArgument.for_field(
            "created", "invalid_event", "created must be a Unix time between 1970 and 9999"
        )
    return event


_FINAL_SQL = ", ".join(f"'{status}'" for status in FINAL)
# Every delivery of a PSP event: recorded once, counted each time; its status before it.
# Webhooks that arrive together are recorded in one statement (coalesced), each event once
# with its count of deliveries (ON CONFLICT may not touch a row twice in one statement).
_RECEIVE = text(
    """
    INSERT INTO webhook.psp_inbox AS i
      (psp, event_id, event_type, psp_created_at, status, payload, deliveries)
    SELECT psp, event_id, event_type, created, 'received', payload, copies
    FROM jsonb_to_recordset(CAST(:deliveries AS jsonb)) AS x(
      psp text, event_id text, event_type text, created timestamptz, payload jsonb,
      copies integer)
    ON CONFLICT (psp, event_id) DO UPDATE SET
      deliveries = i.deliveries + EXCLUDED.deliveries, last_received_at = now()
    RETURNING i.psp, i.event_id, i.status, i.xmax = 0 AS inserted
    """
)
# What became of events, unless they were settled before. The keys again as `= ANY(ARRAY(…))`:
# an index condition whatever the planner believes of the batch (100 rows) and the table.
# Not prepared: a plan cached while the inbox was small read all of it once it had grown.
_SETTLE = text(
    f"""
    WITH x AS (
      SELECT * FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS x(
        psp text, event_id text, status text, reason text, payment_intent text)
    )
    UPDATE webhook.psp_inbox i SET status = x.status, reason = x.reason,
      payment_intent = x.payment_intent, processed_at = now()
    FROM x
    WHERE i.psp = ANY(ARRAY(SELECT psp FROM x)) AND i.event_id = ANY(ARRAY(SELECT event_id FROM x))
      AND i.psp = x.psp AND i.event_id = x.event_id AND i.status NOT IN ({_FINAL_SQL})
    RETURNING i.psp, i.event_id
    """
)


_LAST_TRACE = text(
    """
    SELECT traceparent FROM webhook.events
    WHERE object_id = :object_id AND traceparent IS NOT NULL
    ORDER BY sequence DESC LIMIT 1
    """
)


class Inbox:
    """webhook.psp_inbox: every PSP event once, with how often it came and what became of it.
    Autocommit statements straight on psycopg, each carrying the webhooks handled at the same
    time (every charge's capture comes back through here)."""

    def __init__(self, direct: DirectSql):
        self._direct = direct
        self._receipts = Coalescer(self._receive_many)
        self._outcomes = Coalescer(self._settle_many)

    async def receive(self, psp: str, event: dict) -> str:
        """Records a delivery; the event's status before it (`new` for its first)."""
        # Read here, not in the batch: a bad value (read_event refuses those) would fail its own
        # webhook, not the others.
        created = datetime.fromtimestamp(event["created"], UTC).isoformat()
        return await self._receipts.submit((psp, event, created))

    async def settle(
        self, psp: str, event_id: str, status: str, reason: str, payment_intent: str
    ) -> bool:
        """Records what became of the event; True if this settled it (it was not before)."""
        return await self._outcomes.submit(
            {
                "psp": psp,
                "event_id": event_id,
                "status": status,
                "reason": reason or None,
                "payment_intent": payment_intent or None,
            }
        )

    async def trace_of(self, object_id: str) -> str | None:
        """The traceparent of the newest domain event about an object (a payment's last
        operation), to link a PSP's webhook about it to that payment's trace."""
        row = await self._direct.one(_LAST_TRACE, {"object_id": object_id})
        return row["traceparent"] if row else None

    async def _receive_many(self, deliveries: list[tuple[str, dict, str]]) -> list[str]:
        rows: dict[tuple[str, str], dict] = {}
        for psp, event, created in deliveries:
            row = rows.setdefault(
                (psp, event["id"]),
                {
                    "psp": psp,
                    "event_id": event["id"],
                    "event_type": event["type"],
                    "created": created,
                    "payload": event,
                    "copies": 0,
                },
            )
            row["copies"] += 1
        recorded = await self._direct.all(_RECEIVE, {"deliveries": json.dumps(list(rows.values()))})
        before = {
            (row["psp"], row["event_id"]): "new" if row["inserted"] else row["status"]
            for row in recorded
        }
        # A second copy in the same batch came while the first was still being handled.
        answers, seen = [], set()
        for psp, event, _ in deliveries:
            key = (psp, event["id"])
            answers.append("received" if key in seen else before[key])
            seen.add(key)
        return answers

    async def _settle_many(self, outcomes: list[dict]) -> list[bool]:
        first: dict[tuple[str, str], dict] = {}
        for outcome in outcomes:
            first.setdefault((outcome["psp"], outcome["event_id"]), outcome)
        settled = {
            (row["psp"], row["event_id"])
            for row in await self._direct.all(
                _SETTLE, {"outcomes": json.dumps(list(first.values()))}, prepare=False
            )
        }
        return [
            first[(o["psp"], o["event_id"])] is o and (o["psp"], o["event_id"]) in settled
            for o in outcomes
        ]


class GatewayEvents:
    """Applies facts through the gateway's PspEventService. The facts of webhooks handled at
    the same time go in one call (ApplyPspEvents, coalesced): every capture of ours comes back
    as a webhook, so under load they arrive side by side, and a call per fact cost the
    gateway more than applying it."""

    MAX_BATCH = 100  # the gateway's limit per call

    def __init__(self, stub: psp_events_pb2_grpc.PspEventServiceStub, timeout: float):
        self._stub = stub
        self._timeout = timeout
        self._calls = Coalescer(self._call, self.MAX_BATCH)

    async def apply(
        self, fact: psp_events_pb2.ApplyPspEventRequest
    ) -> psp_events_pb2.ApplyPspEventResponse:
        """The gateway's answer; raises grpc.aio.AioRpcError as the call would."""
        return await self._calls.submit(fact)

    async def _call(self, facts: list) -> list[psp_events_pb2.ApplyPspEventResponse]:
        try:
            answer = await self._stub.ApplyPspEvents(
                psp_events_pb2.ApplyPspEventsRequest(events=facts), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # A gateway older than ApplyPspEvents (a rolling deploy): one call per fact.
            return [await self._stub.ApplyPspEvent(f, timeout=self._timeout) for f in facts]
        return list(answer.outcomes)


class PspWebhookServicer(psp_webhook_pb2_grpc.PspWebhookServiceServicer):
    def __init__(
        self,
        inbox: Inbox,
        gateway: GatewayEvents,
        secrets: dict[str, list[str]],
        tolerance_seconds: float,
    ):
        self._inbox = inbox
        self._gateway = gateway
        self._secrets = secrets
        self._tolerance = tolerance_seconds

    async def ReceivePspWebhook(
        self,
        request: psp_webhook_pb2.ReceivePspWebhookRequest,
        context: grpc.aio.ServicerContext,
    ) -> psp_webhook_pb2.ReceivePspWebhookResponse:
        psp = request.psp
        if psp not in SIGNATURE_HEADERS:
            raise NotFound(f"no such PSP: {psp[:40]!r}", reason="resource_missing")
        body = request.body.data
        if len(body) > MAX_BODY_BYTES:
            raise InvalidArgument.for_field("body", "body_too_large", "the body is over 1 MiB")
        header = dict(context.invocation_metadata() or ()).get(SIGNATURE_HEADERS[psp])
        try:
            psp_signatures.verify(body, header, self._secrets[psp], self._tolerance)
        except psp_signatures.SignatureError as error:
            PSP_EVENTS.labels(psp, "refused").inc()
            log.warning("psp_webhook_refused", psp=psp, reason=error.reason)
            raise InvalidArgument.for_field(
                SIGNATURE_HEADERS[psp], error.reason, str(error)
            ) from None
        try:
            event = read_event(body)
        except InvalidArgument as unreadable:
            PSP_EVENTS.labels(psp, "refused").inc()
            [violation] = unreadable.violations
            log.warning(
                "psp_webhook_refused", psp=psp, reason=violation.reason, field=violation.field
            )
            raise
        structlog.contextvars.bind_contextvars(psp=psp, psp_event=event["id"])
        before = await self._inbox.receive(psp, event)
        if before in FINAL:
            PSP_EVENTS.labels(psp, "duplicate").inc()
            return _answer(event, "duplicate")
        parsed = psp_events.parse(psp, event)
        if not parsed.facts:
            await self._settle(psp, event, "ignored", parsed.ignored, "")
            return _answer(event, "ignored", parsed.ignored)
        status, reason, intent = await self._apply(parsed.facts, event)
        if intent:
            annotate(psp=psp, **{"intent.id": intent})
            link_to(await self._inbox.trace_of(intent))
        if status == "deferred":
            await self._inbox.settle(psp, event["id"], "deferred", reason, intent)
            PSP_EVENTS.labels(psp, "deferred").inc()
            log.info("psp_event_deferred", reason=reason, correlation_id=intent)
            raise Unavailable(
                f"the event cannot be applied yet ({reason}): send it again later",
                reason="psp_event_deferred",
            )
        await self._settle(psp, event, status, reason, intent)
        return _answer(event, status, reason)

    async def _apply(self, facts: list, event: dict) -> tuple[str, str, str]:
        """Every fact through the gateway: `deferred` if any must wait, else `applied` if any
        changed something, else `already_applied`, else `ignored`."""
        created = timestamp_pb2.Timestamp(seconds=event["created"])
        outcomes: list[tuple[str, str, str]] = []
        for fact in facts:
            fact.created.CopyFrom(created)
            try:
                answer = await self._gateway.apply(fact)
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise Unavailable(
                        "the gateway is unavailable: send the event again later",
                        reason="gateway_unavailable",
                    ) from None
                raise
            outcomes.append(
                (_OUTCOMES.get(answer.outcome, "deferred"), answer.reason, answer.payment_intent)
            )
        for wanted in ("deferred", "applied", "already_applied", "ignored"):
            for status, reason, intent in outcomes:
                if status == wanted:
                    return status, reason, intent
        return "ignored", "no_fact", ""

    async def _settle(self, psp: str, event: dict, status: str, reason: str, intent: str):
        settled = await self._inbox.settle(psp, event["id"], status, reason, intent)
        PSP_EVENTS.labels(psp, status if settled else "duplicate").inc()
        if settled and status in ("applied", "already_applied"):
            LAG.labels(psp).observe(max(0.0, time.time() - event["created"]))
        log.info("psp_event", outcome=status, reason=reason, correlation_id=intent)


def _answer(
    event: dict, outcome: str, reason: str = ""
) -> psp_webhook_pb2.ReceivePspWebhookResponse:
    return psp_webhook_pb2.ReceivePspWebhookResponse(
        received=True, event=event["id"], outcome=outcome, reason=reason
    )


def register_inbound(server: grpc.aio.Server, resources: Resources) -> list:
    """Adds PspWebhookService to the server; the background jobs it needs."""
    settings = resources.settings
    assert isinstance(settings, WebhookSettings)
    channel = service_channel(settings.gateway_addr, resources.token_issuer, "gateway")
    servicer = PspWebhookServicer(
        Inbox(resources.direct_sql),
        GatewayEvents(psp_events_pb2_grpc.PspEventServiceStub(channel), GATEWAY_TIMEOUT_SECONDS),
        psp_secrets(settings),
        settings.psp_signature_tolerance_seconds,
    )
    psp_webhook_pb2_grpc.add_PspWebhookServiceServicer_to_server(servicer, server)
    return [close_on_shutdown(channel)]


SERVICE_NAME = psp_webhook_pb2.DESCRIPTOR.services_by_name["PspWebhookService"].full_name
