"""gRPC transport of WebhookAdminService: operators' (`ops`) and the back office's
(`backoffice`) view of deliveries across merchants. Decode, check, call the store, encode."""

from __future__ import annotations

import grpc

from paymesh.platform.callers import Callers
from paymesh.platform.errors import InvalidArgument
from paymesh.platform.operators import ADMIN_IDENTITIES, filter_id, operator_email
from paymesh.platform.problems import NotFound
from paymesh.platform.wire import require_id, timestamp
from paymesh.webhook.v1 import webhook_admin_pb2 as pb
from paymesh.webhook.v1 import webhook_admin_pb2_grpc
from webhook_svc.domain.outcome import Sent, attempt_outcomes
from webhook_svc.domain.status import DeliveryStatus
from webhook_svc.outbound.admin_store import (
    DELIVERY_PREFIX,
    DeliveryAdmin,
    DeliveryFilter,
    DeliveryView,
    delivery_id,
    delivery_number,
)

DEFAULT_LIMIT = 50


def delivery_message(view: DeliveryView) -> pb.Delivery:
    row = view.row
    outcomes = attempt_outcomes(
        [Sent(a.attempt, a.status_code) for a in view.attempts], DeliveryStatus(row.status)
    )
    return pb.Delivery(
        id=delivery_id(row.id),
        event_id=row.event_id,
        event_type=row.event_type,
        merchant_id=row.merchant_id,
        webhook_endpoint=row.endpoint_id,
        url=row.url,
        status=row.status,
        payment_intent=row.payment_intent or "",
        attempts=[
            pb.AdminDeliveryAttempt(
                at=timestamp(a.at),
                status_code=a.status_code or 0,
                duration_ms=a.duration_ms,
                error=a.error or "",
                outcome=outcome,
            )
            for a, outcome in zip(view.attempts, outcomes, strict=True)
        ],
        created=timestamp(row.created_at),
        next_attempt_at=timestamp(
            row.next_attempt_at if row.status == DeliveryStatus.PENDING else None
        ),
    )


def _limit(value: int) -> int:
    limit = value or DEFAULT_LIMIT
    if not 1 <= limit <= 100:
        raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
    return limit


def _delivery(value: str) -> int:
    number = delivery_number(require_id(value, DELIVERY_PREFIX, "delivery"))
    if number is None:
        raise NotFound("no such delivery", reason="resource_missing")
    return number


class WebhookAdminServicer(webhook_admin_pb2_grpc.WebhookAdminServiceServicer):
    def __init__(self, store: DeliveryAdmin, callers: Callers):
        self._store = store
        self._callers = callers

    def _operator(self, context: grpc.aio.ServicerContext) -> None:
        self._callers.service(context, allowed=ADMIN_IDENTITIES)

    async def ListDeliveries(self, request, context):
        self._operator(context)
        which = DeliveryFilter(
            event_id=filter_id(request.event_id, "evt_", "event_id"),
            payment_intent=filter_id(request.payment_intent, "pi_", "payment_intent"),
            merchant_id=filter_id(request.merchant_id, "acct_", "merchant_id"),
        )
        if which == DeliveryFilter():
            raise InvalidArgument.for_field(
                "event_id", "missing_filter", "give event_id, payment_intent or merchant_id"
            )
        views = await self._store.search(which, _limit(request.limit))
        return pb.ListDeliveriesResponse(data=[delivery_message(v) for v in views])

    async def ListDeadDeliveries(self, request, context):
        self._operator(context)
        merchant_id = filter_id(request.merchant_id, "acct_", "merchant_id")
        views = await self._store.dead(merchant_id, _limit(request.limit))
        return pb.ListDeliveriesResponse(data=[delivery_message(v) for v in views])

    async def RetryDelivery(self, request, context):
        self._operator(context)
        number = _delivery(request.id)
        operator = operator_email(request.operator, required=True)
        return delivery_message(await self._store.retry(number, operator))

    async def DiscardDelivery(self, request, context):
        self._operator(context)
        number = _delivery(request.id)
        operator = operator_email(request.operator, required=True)
        return delivery_message(await self._store.discard(number, operator))
