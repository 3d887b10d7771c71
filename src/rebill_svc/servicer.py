"""gRPC transport of rebill_svc: decode, call the repository or domain, encode."""

from __future__ import annotations

import grpc
import structlog

from paymesh.platform.callers import Callers
from paymesh.platform.errors import NotFound
from paymesh.platform.wire import require_id, timestamp
from paymesh.rebill.v1 import rebill_pb2, rebill_pb2_grpc
from rebill_svc.repository import SubscriptionRepository


def subscription_message(row) -> rebill_pb2.Subscription:
    return rebill_pb2.Subscription(
        id=row.id,
        payment_method=row.payment_method,
        amount=row.amount,
        currency=row.currency,
        interval=row.interval,
        status=row.status,
        current_period_start=timestamp(row.current_period_start),
        current_period_end=timestamp(row.current_period_end),
        created=timestamp(row.created_at),
        livemode=row.livemode,
    )


class RebillServicer(rebill_pb2_grpc.RebillServiceServicer):
    def __init__(self, subscriptions: SubscriptionRepository, callers: Callers):
        self._subscriptions = subscriptions
        self._callers = callers

    async def GetSubscription(
        self, request: rebill_pb2.GetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> rebill_pb2.Subscription:
        merchant = await self._callers.merchant(context)
        subscription_id = require_id(request.id, "sub_", "subscription")
        structlog.contextvars.bind_contextvars(correlation_id=subscription_id)
        row = await self._subscriptions.get(subscription_id, merchant)
        if row is None:
            raise NotFound(f"no such subscription: {subscription_id!r}", reason="resource_missing")
        return subscription_message(row)
