"""Inbound PSP webhooks: `POST /v1/psp/{psp}/webhooks` (PspWebhookService).

The raw body's signature is checked first (nothing is recorded for a request that fails it:
400 missing_signature / invalid_signature / stale_signature). The event then goes into the
inbox (webhook.psp_inbox, one row per PSP event id, counting every delivery of it), and its
facts are applied through the gateway's PspEventService under the webhook service's own
identity. The inbox makes the same event, delivered ten times, applied once; the gateway's
conditional writes make a late or repeated fact change nothing. An event the gateway cannot
apply yet (an operation of paymesh on the payment is in flight, an earlier event has not
come) is answered 503, so the PSP sends it again; one it can never apply is recorded with
its reason and answered 200.

The PSP's echo of a capture the gateway made itself (every charge of ours is announced back)
is told apart here, from the gateway's own events webhook_svc stores: a webhook whose facts
only confirm a recorded success (webhook_svc.domain.echoes) is recorded and settled
`already_applied` in one statement, and the gateway is not asked. Until the gateway's event
has arrived (the PSP's webhook may overtake it), the gateway decides, as for any other."""

from __future__ import annotations

import time

import grpc
import structlog
from google.protobuf import timestamp_pb2

from paymesh.gateway.v1 import psp_events_pb2
from paymesh.platform.problems import InvalidArgument, NotFound, Unavailable
from paymesh.platform.tracing import annotate, link_to
from paymesh.webhook.v1 import psp_webhook_pb2, psp_webhook_pb2_grpc
from webhook_svc.domain import echoes
from webhook_svc.inbound import psp_events, psp_signatures
from webhook_svc.inbound.gateway import GatewayEvents
from webhook_svc.inbound.inbox import FINAL, Inbox
from webhook_svc.inbound.metrics import LAG, PSP_EVENTS
from webhook_svc.inbound.recorded import RecordedSuccesses

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # Envoy refuses larger bodies with 413 before they get here
SIGNATURE_HEADERS = {"stripe": "stripe-signature", "sandbox": "sandbox-signature"}

_OUTCOMES = {
    psp_events_pb2.PSP_EVENT_OUTCOME_APPLIED: "applied",
    psp_events_pb2.PSP_EVENT_OUTCOME_ALREADY_APPLIED: "already_applied",
    psp_events_pb2.PSP_EVENT_OUTCOME_IGNORED: "ignored",
    psp_events_pb2.PSP_EVENT_OUTCOME_RETRY_LATER: "deferred",
}


class PspWebhookServicer(psp_webhook_pb2_grpc.PspWebhookServiceServicer):
    def __init__(
        self,
        inbox: Inbox,
        gateway: GatewayEvents,
        secrets: dict[str, list[str]],
        tolerance_seconds: float,
        recorded: RecordedSuccesses,
    ):
        self._inbox = inbox
        self._recorded = recorded
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
            event = psp_events.read_event(body)
        except InvalidArgument as unreadable:
            PSP_EVENTS.labels(psp, "refused").inc()
            [violation] = unreadable.violations
            log.warning(
                "psp_webhook_refused", psp=psp, reason=violation.reason, field=violation.field
            )
            raise
        structlog.contextvars.bind_contextvars(psp=psp, psp_event=event["id"])
        parsed = psp_events.parse(psp, event)
        echoed = await self._echo_of_recorded(parsed.facts)
        if echoed is not None:
            return await self._dismiss_echo(psp, event, *echoed)
        before = await self._inbox.receive(psp, event)
        if before in FINAL:
            PSP_EVENTS.labels(psp, "duplicate").inc()
            return _answer(event, "duplicate")
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

    async def _echo_of_recorded(self, facts: list) -> tuple[str, str | None] | None:
        """The intent (and its success's traceparent) whose recorded success the facts only
        echo; None when any fact is news, or webhook_svc has not stored the gateway's event
        yet (the PSP's webhook may overtake it): then the gateway decides, as for any other."""
        captures = [_capture(fact) for fact in facts]
        if not captures or None in captures:
            return None  # no read for what cannot be an echo
        recorded = {}
        for capture in captures:
            assert capture is not None
            found = await self._recorded.of(capture.psp_reference, wait=True)
            if found is None:
                return None
            recorded[capture.psp_reference] = found
        intent = echoes.echoed_intent(captures, {ref: r for ref, (r, _) in recorded.items()})
        if intent is None:
            return None
        return intent, next(iter(recorded.values()))[1]

    async def _dismiss_echo(
        self, psp: str, event: dict, intent: str, traceparent: str | None
    ) -> psp_webhook_pb2.ReceivePspWebhookResponse:
        """Recorded and settled `already_applied` in one statement; the gateway is not asked."""
        annotate(psp=psp, **{"intent.id": intent})
        link_to(traceparent)
        status, reason = "already_applied", echoes.REASON
        if not await self._inbox.receive_settled(psp, event, status, reason, intent):
            PSP_EVENTS.labels(psp, "duplicate").inc()
            return _answer(event, "duplicate")
        self._count(psp, event, status, reason, intent, settled=True)
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
        self._count(psp, event, status, reason, intent, settled)

    @staticmethod
    def _count(psp: str, event: dict, status: str, reason: str, intent: str, settled: bool):
        PSP_EVENTS.labels(psp, status if settled else "duplicate").inc()
        if settled and status in ("applied", "already_applied"):
            LAG.labels(psp).observe(max(0.0, time.time() - event["created"]))
        log.info("psp_event", outcome=status, reason=reason, correlation_id=intent)


def _capture(fact: psp_events_pb2.ApplyPspEventRequest) -> echoes.Capture | None:
    if fact.WhichOneof("fact") != "captured":
        return None
    return echoes.Capture(
        psp=fact.psp,
        psp_reference=fact.psp_reference,
        amount=fact.captured.amount_captured,
        currency=fact.captured.currency,
    )


def _answer(
    event: dict, outcome: str, reason: str = ""
) -> psp_webhook_pb2.ReceivePspWebhookResponse:
    return psp_webhook_pb2.ReceivePspWebhookResponse(
        received=True, event=event["id"], outcome=outcome, reason=reason
    )
