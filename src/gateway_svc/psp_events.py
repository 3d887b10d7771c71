"""gRPC transport of PspEventService: the webhook service applies a PSP's events here."""

from __future__ import annotations

import asyncio
from datetime import UTC

import grpc
import structlog

from gateway_svc.domain.psp_events import MISMATCH_KINDS, Outcome, PspEvent
from gateway_svc.metrics import PSP_EVENTS, RECONCILIATION_MISMATCHES
from gateway_svc.repository.psp_events import PspEventRepository
from paymesh.gateway.v1 import psp_events_pb2, psp_events_pb2_grpc
from paymesh.platform.callers import Callers
from paymesh.platform.problems import InvalidArgument

log = structlog.get_logger(__name__)
PSPS = ("sandbox", "stripe")
_OUTCOMES = {
    Outcome.APPLIED: psp_events_pb2.PSP_EVENT_OUTCOME_APPLIED,
    Outcome.ALREADY_APPLIED: psp_events_pb2.PSP_EVENT_OUTCOME_ALREADY_APPLIED,
    Outcome.IGNORED: psp_events_pb2.PSP_EVENT_OUTCOME_IGNORED,
    Outcome.RETRY_LATER: psp_events_pb2.PSP_EVENT_OUTCOME_RETRY_LATER,
}
_MAX_TEXT = 255
MAX_EVENTS_PER_CALL = 100


def read_event(request: psp_events_pb2.ApplyPspEventRequest) -> PspEvent:
    """The request as a PspEvent; the caller's 400 naming the field if it cannot be one."""
    if request.psp not in PSPS:
        raise InvalidArgument.for_field("psp", "invalid_value", "psp must be sandbox or stripe")
    for name in ("event_id", "psp_reference"):
        value = getattr(request, name)
        if not value or len(value) > _MAX_TEXT:
            raise InvalidArgument.for_field(name, "invalid_value", f"{name} is required")
    fact = request.WhichOneof("fact")
    common = {
        "psp": request.psp,
        "event_id": request.event_id,
        "event_type": request.event_type[:100],
        "psp_reference": request.psp_reference,
        "attempt_key": request.attempt_key[:_MAX_TEXT],
    }
    if fact == "captured":
        return PspEvent(
            kind="capture",
            amount=request.captured.amount_captured,
            currency=request.captured.currency,
            **common,
        )
    if fact == "refunded":
        refunded = request.refunded
        if not refunded.refund_reference or len(refunded.refund_reference) > _MAX_TEXT:
            raise InvalidArgument.for_field(
                "refunded.refund_reference", "invalid_value", "the PSP's refund id is required"
            )
        return PspEvent(
            kind="refund",
            amount=refunded.amount,
            currency=refunded.currency,
            reference=refunded.refund_reference,
            refund_key=refunded.refund_key[:_MAX_TEXT],
            **common,
        )
    if fact == "disputed":
        disputed = request.disputed
        if not disputed.dispute_reference or len(disputed.dispute_reference) > _MAX_TEXT:
            raise InvalidArgument.for_field(
                "disputed.dispute_reference", "invalid_value", "the PSP's dispute id is required"
            )
        return PspEvent(
            kind="dispute",
            amount=disputed.amount,
            currency=disputed.currency,
            reference=disputed.dispute_reference,
            reason=disputed.reason[:100],
            status=disputed.status[:40],
            evidence_due_by=(
                disputed.evidence_due_by.ToDatetime(tzinfo=UTC)
                if disputed.HasField("evidence_due_by")
                else None
            ),
            **common,
        )
    if fact == "authorized":
        return PspEvent(
            kind="authorized",
            amount=request.authorized.amount_capturable,
            currency=request.authorized.currency,
            **common,
        )
    if fact == "authentication_failed":
        return PspEvent(
            kind="failed", amount=0, reason=request.authentication_failed.code[:100], **common
        )
    raise InvalidArgument.for_field(
        "fact", "missing", "one of captured, refunded, disputed, authorized, authentication_failed"
    )


class PspEventServicer(psp_events_pb2_grpc.PspEventServiceServicer):
    """Internal: only the webhook service may call it."""

    def __init__(self, repository: PspEventRepository, callers: Callers):
        self._repository = repository
        self._callers = callers

    async def ApplyPspEvent(
        self, request: psp_events_pb2.ApplyPspEventRequest, context: grpc.aio.ServicerContext
    ) -> psp_events_pb2.ApplyPspEventResponse:
        self._callers.service(context, allowed={"webhook"})
        return await self._apply(read_event(request), bind_log=True)

    async def ApplyPspEvents(
        self, request: psp_events_pb2.ApplyPspEventsRequest, context: grpc.aio.ServicerContext
    ) -> psp_events_pb2.ApplyPspEventsResponse:
        self._callers.service(context, allowed={"webhook"})
        if len(request.events) > MAX_EVENTS_PER_CALL:
            raise InvalidArgument.for_field(
                "events", "too_many", f"at most {MAX_EVENTS_PER_CALL} events per call"
            )

        async def one(event_request) -> psp_events_pb2.ApplyPspEventResponse:
            try:
                event = read_event(event_request)
            except InvalidArgument:
                return psp_events_pb2.ApplyPspEventResponse(
                    outcome=psp_events_pb2.PSP_EVENT_OUTCOME_IGNORED, reason="invalid_event"
                )
            try:
                return await self._apply(event, bind_log=False)
            except Exception:  # noqa: BLE001 - one event's failure must not fail the others
                log.exception("psp_event_failed", psp=event.psp, psp_event=event.event_id)
                return psp_events_pb2.ApplyPspEventResponse(
                    outcome=psp_events_pb2.PSP_EVENT_OUTCOME_RETRY_LATER, reason="gateway_error"
                )

        # Events of different payments, side by side; one webhook's events come in one at a
        # time (webhook_svc waits for each), so a payment's events keep their order.
        outcomes = await asyncio.gather(*(one(event) for event in request.events))
        return psp_events_pb2.ApplyPspEventsResponse(outcomes=outcomes)

    async def _apply(self, event: PspEvent, bind_log: bool) -> psp_events_pb2.ApplyPspEventResponse:
        result = await self._repository.apply_psp_event(event)
        decision, intent = result.decision, result.intent
        intent_id = intent.id if intent is not None else ""
        if intent_id and bind_log:
            structlog.contextvars.bind_contextvars(
                correlation_id=intent_id, merchant_id=intent.merchant_id
            )
        PSP_EVENTS.labels(event.psp, event.kind, decision.outcome, decision.reason).inc()
        if decision.mismatch:
            kind = MISMATCH_KINDS[decision.reason]
            RECONCILIATION_MISMATCHES.labels(event.psp, kind, decision.reason).inc()
            log.warning(
                "psp_event_contradicts_records",
                psp=event.psp,
                psp_event=event.event_id,
                kind=event.kind,
                reason=decision.reason,
                correlation_id=intent_id,
            )
        else:
            log.info(
                "psp_event",
                psp=event.psp,
                psp_event=event.event_id,
                kind=event.kind,
                outcome=str(decision.outcome),
                reason=decision.reason,
                correlation_id=intent_id,
            )
        return psp_events_pb2.ApplyPspEventResponse(
            outcome=_OUTCOMES[decision.outcome], reason=decision.reason, payment_intent=intent_id
        )
