"""One charge attempt through gateway_svc's generated stub, with the rebill service's identity
on the merchant's behalf: create and confirm a payment intent under the attempt's idempotency
key, and read what happened as an Outcome.

The gateway's answers in the PSP outcome taxonomy: an issuer's decline (`card_declined`, hard
or soft) counts toward dunning's final status. A charge the PSP holds for the customer's
authentication (3-D Secure) is ACTION_REQUIRED: neither paid nor declined. An intent no PSP
could take because none holds its card any more (`card_reprovision_failed`, or any other code
that is not an issuer's decline) is NOT_CHARGED: retried, never counted. Anything else that is
not a success (every PSP failed: 503 `psp_unavailable`; the PSP's answer was lost; the gateway
was unreachable; the key is still in use by a request that may charge) is UNKNOWN: the same
attempt is asked again later, under the same key, and counts for nothing."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paymesh.platform.callers import Merchant
from paymesh.platform.channels import on_behalf_of
from paymesh.platform.errors import reason_of
from rebill_svc.domain.dunning import Outcome

# last_payment_error.code of the failures dunning counts: an issuer's decline, and the
# customer's failed authentication (3-D Secure), which the customer, not a PSP, caused.
COUNTED_FAILURES = ("card_declined", "payment_intent_authentication_failure")
# The gateway refused the request itself: asking again cannot charge, nor succeed.
_REFUSED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)


@dataclass(frozen=True)
class ChargeResult:
    outcome: Outcome
    decline_code: str = ""
    payment_intent: str = ""


@dataclass(frozen=True)
class ChargeRequest:
    merchant: Merchant
    payment_method: str
    amount: int
    currency: str
    idempotency_key: str
    subscription_id: str
    period_start: str
    attempt: int


def outcome_of(intent: gateway_pb2.PaymentIntent) -> ChargeResult:
    if intent.status == "succeeded":
        return ChargeResult(Outcome.SUCCEEDED, payment_intent=intent.id)
    if intent.status == "requires_action":
        return ChargeResult(Outcome.ACTION_REQUIRED, payment_intent=intent.id)
    error = intent.last_payment_error
    if intent.status == "requires_payment_method" and error.code in COUNTED_FAILURES:
        outcome = Outcome.DECLINED_HARD if error.type == "hard" else Outcome.DECLINED_SOFT
        return ChargeResult(outcome, error.decline_code or error.code, intent.id)
    if intent.status == "requires_payment_method" and error.code:
        return ChargeResult(Outcome.NOT_CHARGED, error.code, intent.id)
    return ChargeResult(Outcome.UNKNOWN, payment_intent=intent.id)


class GatewayCharger:
    def __init__(self, channel: grpc.aio.Channel, timeout: float = 30.0):
        self._stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        self._timeout = timeout

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        try:
            intent = await self._stub.CreatePaymentIntent(
                gateway_pb2.CreatePaymentIntentRequest(
                    amount=request.amount,
                    currency=request.currency,
                    payment_method=request.payment_method,
                    confirm=True,
                    description=f"Subscription {request.subscription_id}",
                    metadata={
                        "subscription": request.subscription_id,
                        "period_start": request.period_start,
                        "attempt": str(request.attempt),
                    },
                ),
                metadata=(
                    ("idempotency-key", request.idempotency_key),
                    *on_behalf_of(request.merchant),
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            reason = reason_of(error) or error.code().name.lower()
            refused = error.code() in _REFUSED
            return ChargeResult(Outcome.DECLINED_HARD if refused else Outcome.UNKNOWN, reason)
        return outcome_of(intent)
