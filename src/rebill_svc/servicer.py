"""gRPC transport of rebill_svc: decode, call the repository or domain, encode."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import structlog

from paymesh.platform.callers import Callers, Merchant
from paymesh.platform.channels import on_behalf_of
from paymesh.platform.errors import InvalidArgument, NotFound, Unavailable
from paymesh.platform.idempotency.rpc import idempotent
from paymesh.platform.idempotency.store import Claim, Idempotency
from paymesh.platform.tracing import annotate_object
from paymesh.platform.wire import (
    optional_datetime,
    page_limit,
    require_id,
    required_datetime,
    timestamp,
)
from paymesh.rebill.v1 import rebill_pb2, rebill_pb2_grpc
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from rebill_svc.domain.subscriptions import Status, new_subscription, renewal_status
from rebill_svc.domain.updates import subscription_update
from rebill_svc.repository import SubscriptionRepository
from rebill_svc.runner import JobRunner

STATUSES = {s.value for s in Status}
# A clock's time, and with it every period its subscriptions reach, stays clear of the
# calendar's end (year 9999): a period past it cannot be computed, and the scheduler would
# stall on it for every merchant.
LATEST_CLOCK_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def subscription_message(row) -> rebill_pb2.Subscription:
    return rebill_pb2.Subscription(
        id=row.id,
        payment_method=row.payment_method,
        amount=row.amount,
        currency=row.currency,
        interval=row.interval,
        interval_count=row.interval_count,
        status=row.status,
        current_period_start=timestamp(row.current_period_start),
        current_period_end=timestamp(row.current_period_end),
        billing_cycle_anchor=timestamp(row.billing_cycle_anchor),
        trial_end=timestamp(row.trial_end),
        test_clock=row.test_clock or "",
        metadata=row.metadata,
        cancel_at_period_end=row.cancel_at_period_end,
        canceled_at=timestamp(row.canceled_at),
        next_attempt_at=timestamp(row.next_attempt_at),
        created=timestamp(row.created_at),
        livemode=row.livemode,
    )


def rebill_message(row) -> rebill_pb2.Rebill:
    return rebill_pb2.Rebill(
        period_start=timestamp(row.period_start),
        period_end=timestamp(row.period_end),
        amount=row.amount,
        currency=row.currency,
        attempt=row.attempt,
        outcome=row.outcome,
        decline_code=row.decline_code,
        payment_intent=row.payment_intent,
        at=timestamp(row.at),
    )


def renewal_message(row) -> rebill_pb2.Renewal:
    return rebill_pb2.Renewal(
        id=row.id,
        subscription=row.subscription_id,
        period_start=timestamp(row.period_start),
        period_end=timestamp(row.period_end),
        amount=row.amount,
        currency=row.currency,
        status=renewal_status(row.status),
        attempt=row.attempt,
        created=timestamp(row.created_at),
        livemode=row.livemode,
        payment_intent=row.payment_intent or "",
    )


def clock_message(row, status: str) -> rebill_pb2.TestClock:
    return rebill_pb2.TestClock(
        id=row.id,
        frozen_time=timestamp(row.frozen_time),
        status=status,
        created=timestamp(row.created_at),
        livemode=row.livemode,
    )


class PaymentMethods:
    """Whether a payment method can be charged for a merchant, asked of the vault."""

    def __init__(self, channel: grpc.aio.Channel):
        self._stub = vault_pb2_grpc.VaultServiceStub(channel)

    async def require_usable(self, merchant: Merchant, payment_method: str) -> None:
        try:
            await self._stub.GetPaymentMethod(
                vault_pb2.GetPaymentMethodRequest(id=payment_method),
                metadata=on_behalf_of(merchant),
                timeout=5,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise InvalidArgument.for_field(
                    "payment_method",
                    "resource_missing",
                    "no such payment method (unknown, detached, or not this merchant's)",
                ) from None
            raise Unavailable(
                "cannot check the payment method right now", reason="vault_unavailable"
            ) from error


class RebillServicer(rebill_pb2_grpc.RebillServiceServicer):
    """Every POST is `@idempotent`: a retry under its key is answered with the subscription
    or test clock the key is bound to, as it is now, or with the error, before its request is
    checked against the clock or the vault."""

    def __init__(
        self,
        subscriptions: SubscriptionRepository,
        callers: Callers,
        payment_methods: PaymentMethods,
        runner: JobRunner,
        idempotency: Idempotency,
    ):
        self._subscriptions = subscriptions
        self.callers = callers
        self._payment_methods = payment_methods
        self._runner = runner
        self.idempotency = idempotency

    async def replay(self, claim: Claim):
        object_id = claim.replay_object or ""
        if object_id.startswith("clock_"):
            row, status = await self._subscriptions.clock(claim.merchant, object_id)
            return clock_message(row, status)
        structlog.contextvars.bind_contextvars(correlation_id=object_id)
        annotate_object(object_id)
        return subscription_message(await self._subscriptions.get(object_id, claim.merchant))

    @idempotent(binds=True)
    async def CreateSubscription(self, request, context, claim: Claim):
        merchant = claim.merchant
        now = await self._subscriptions.now(merchant, _clock_id(request.test_clock))
        new = new_subscription(
            payment_method=request.payment_method,
            amount=request.amount,
            currency=request.currency,
            interval=request.interval,
            interval_count=request.interval_count,
            anchor=optional_datetime(request, "billing_cycle_anchor"),
            trial_end=optional_datetime(request, "trial_end"),
            metadata=dict(request.metadata),
            now=now,
        )
        await self._payment_methods.require_usable(merchant, request.payment_method)
        created = await self._subscriptions.create(
            merchant,
            new=new,
            payment_method=request.payment_method,
            amount=request.amount,
            currency=request.currency,
            metadata=dict(request.metadata),
            test_clock=request.test_clock,
            key=claim,
            lease_owner=self._runner.owner,
            lease_seconds=self._runner.lease_seconds,
        )
        row = created.subscription
        structlog.contextvars.bind_contextvars(correlation_id=row.id)
        annotate_object(row.id)
        if created.first_period is not None:
            # The first period's charge is part of the creation. Should this call die here,
            # the job's lease lapses and the scheduler hands it to a worker.
            await self._runner.run_claimed(created.first_period)
            row = await self._subscriptions.get(row.id, merchant)
        return subscription_message(row)

    @idempotent(binds=True)
    async def UpdateSubscription(self, request, context, claim: Claim):
        merchant = claim.merchant
        subscription_id = self._id(request.id)
        change = subscription_update(
            payment_method=(request.payment_method if request.HasField("payment_method") else None),
            amount=request.amount if request.HasField("amount") else None,
            metadata=dict(request.metadata),
        )
        if change.payment_method is not None:
            await self._payment_methods.require_usable(merchant, change.payment_method)
        updated = await self._subscriptions.update(
            merchant,
            subscription_id,
            change,
            key=claim,
            lease_owner=self._runner.owner,
            lease_seconds=self._runner.lease_seconds,
        )
        row = updated.subscription
        if updated.open_period is not None:
            # The new card's attempt is part of the update. Should this call die here, the
            # job's lease lapses and the scheduler hands it to a worker.
            await self._runner.run_claimed(updated.open_period)
            row = await self._subscriptions.get(row.id, merchant)
        return subscription_message(row)

    async def GetSubscription(self, request, context):
        merchant = await self.callers.merchant(context)
        return subscription_message(await self._subscriptions.get(self._id(request.id), merchant))

    async def ListSubscriptions(self, request, context):
        merchant = await self.callers.merchant(context)
        limit = page_limit(request.limit)
        if request.status and request.status not in STATUSES:
            raise InvalidArgument.for_field(
                "status", "invalid_status", "status must be one of " + ", ".join(sorted(STATUSES))
            )
        rows, has_more = await self._subscriptions.page(
            merchant, limit, request.starting_after, request.status
        )
        return rebill_pb2.ListSubscriptionsResponse(
            data=[subscription_message(r) for r in rows], has_more=has_more
        )

    @idempotent()
    async def CancelSubscription(self, request, context, claim: Claim):
        row = await self._subscriptions.cancel(
            claim.merchant, self._id(request.id), request.at_period_end
        )
        return subscription_message(row)

    @idempotent()
    async def PauseSubscription(self, request, context, claim: Claim):
        row = await self._subscriptions.pause(claim.merchant, self._id(request.id))
        return subscription_message(row)

    @idempotent()
    async def ResumeSubscription(self, request, context, claim: Claim):
        row = await self._subscriptions.resume(claim.merchant, self._id(request.id))
        return subscription_message(row)

    async def ListRebills(self, request, context):
        merchant = await self.callers.merchant(context)
        limit = page_limit(request.limit)
        if request.offset < 0:
            raise InvalidArgument.for_field("offset", "invalid_offset", "offset must be 0 or more")
        rows, has_more = await self._subscriptions.rebills(
            merchant, self._id(request.id), limit, request.offset
        )
        return rebill_pb2.ListRebillsResponse(
            data=[rebill_message(r) for r in rows], has_more=has_more
        )

    async def GetRenewal(self, request, context):
        merchant = await self.callers.merchant(context)
        renewal_id = require_id(request.id, "rj_", "renewal")
        annotate_object(renewal_id)
        return renewal_message(await self._subscriptions.renewal(renewal_id, merchant))

    @idempotent()
    async def CreateTestClock(self, request, context, claim: Claim):
        merchant = self._test_mode(claim.merchant)
        row = await self._subscriptions.create_clock(merchant, _frozen_time(request))
        return clock_message(row, "ready")

    async def GetTestClock(self, request, context):
        merchant = self._test_mode(await self.callers.merchant(context))
        row, status = await self._subscriptions.clock(merchant, self._clock(request.id))
        return clock_message(row, status)

    @idempotent()
    async def AdvanceTestClock(self, request, context, claim: Claim):
        merchant = self._test_mode(claim.merchant)
        clock_id = self._clock(request.id)
        row, status = await self._subscriptions.advance_clock(
            merchant, clock_id, _frozen_time(request)
        )
        return clock_message(row, status)

    @staticmethod
    def _id(value: str) -> str:
        subscription_id = require_id(value, "sub_", "subscription")
        structlog.contextvars.bind_contextvars(correlation_id=subscription_id)
        annotate_object(subscription_id)
        return subscription_id

    @staticmethod
    def _clock(value: str) -> str:
        return require_id(value, "clock_", "test_clock")

    @staticmethod
    def _test_mode(merchant: Merchant) -> Merchant:
        if merchant.livemode:
            raise InvalidArgument.for_field(
                "livemode", "livemode_test_clock", "test clocks exist in test mode only"
            )
        return merchant


def _clock_id(value: str) -> str:
    """A subscription's test clock: one that cannot exist is bad input, named."""
    if not value:
        return ""
    try:
        return require_id(value, "clock_", "test_clock", field="test_clock")
    except NotFound:
        raise InvalidArgument.for_field(
            "test_clock", "resource_missing", "no such test clock"
        ) from None


def _frozen_time(request) -> datetime:
    frozen_time = required_datetime(request, "frozen_time")
    if frozen_time >= LATEST_CLOCK_TIME:
        raise InvalidArgument.for_field(
            "frozen_time", "out_of_range", "frozen_time must be before the year 9000"
        )
    return frozen_time
