"""What every payment use case needs, built once by the service's wiring."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway_svc.psp.card_tokens import CardTokens
from gateway_svc.psp.routing import PspRouter
from gateway_svc.repository import KeyRef, PaymentRepository
from paymesh.platform.callers import Merchant
from paymesh.platform.idempotency.keys import OUTCOME_UNKNOWN
from paymesh.platform.interceptors import DATABASE_OUTAGES
from paymesh.platform.problems import FailedPrecondition, Unavailable

ROUTE_CACHE_SECONDS = 5.0
# The values that say no PSP operation of an intent is in flight.
NOTHING_PENDING = {
    "pending_operation": None,
    "pending_key": None,
    "pending_amount": None,
    "pending_since": None,
}


# When a merchant may ask again about an outcome the recovery sweep settles.
RETRY_OUTCOME_AFTER_SECONDS = 10


class OutcomePending(Unavailable):
    """The PSP may have done it; the recovery sweep settles it. Retrying under the same
    Idempotency-Key is safe (see `for_keyless` for a request that had none)."""

    def __init__(self, what: str, intent_id: str):
        super().__init__(
            f"the payment processor did not answer the {what} of {intent_id}; its outcome is"
            " settled automatically. Retry with the same Idempotency-Key to see it.",
            reason=OUTCOME_UNKNOWN,
            metadata={"payment_intent": intent_id},
            retry_after_seconds=RETRY_OUTCOME_AFTER_SECONDS,
        )
        self.what = what


def for_keyless(error: Exception, intent_id: str) -> Exception:
    """`error` as a request without an Idempotency-Key must hear it: a 503 after which the
    request may have moved money names the intent and where its outcome will show, instead of
    advising a retry under a key it never had (a keyless retry is a new request)."""
    outcome = f" Its outcome will arrive as an event and on GET /v1/payment_intents/{intent_id}."
    if isinstance(error, OutcomePending):
        message = (
            f"the payment processor did not answer the {error.what} of {intent_id}; it is"
            " settled automatically." + outcome
        )
    elif isinstance(error, DATABASE_OUTAGES) or (
        isinstance(error, Unavailable) and error.reason == "database_unavailable"
    ):
        message = (
            f"the database became unavailable during this request for {intent_id}; it may or"
            " may not have taken effect." + outcome
        )
    else:
        return error
    reason = OUTCOME_UNKNOWN if isinstance(error, OutcomePending) else "database_unavailable"
    return Unavailable(message, reason=reason, metadata={"payment_intent": intent_id})


def settles_keys(actor: str, key: KeyRef | None) -> bool:
    """Whether recording an outcome must end the keys waiting on its object: the request's
    own key, or, for the sweep, the key of whatever request died waiting (a keyless request
    has none to end)."""
    return actor != "api" or key is not None


# When a merchant may try again after every PSP of its route failed: about when an open
# breaker lets its first probe through (GATEWAY_BREAKER_RESET_SECONDS' default).
RETRY_PSP_AFTER_SECONDS = 30


def psp_unavailable() -> Unavailable:
    """Every PSP failed (or was skipped by its open breaker): nothing was done, and nothing
    is wrong with the card. Never a decline."""
    return Unavailable(
        "no payment processor could take this request now; nothing was done. Retry later.",
        reason="psp_unavailable",
        retry_after_seconds=RETRY_PSP_AFTER_SECONDS,
    )


def psp_refused(psp: str, why: object) -> FailedPrecondition:
    return FailedPrecondition(f"{psp} refused: {why}", reason="psp_refused")


@dataclass
class Payments:
    repository: PaymentRepository
    router: PspRouter
    card_tokens: CardTokens  # the cards' PSP references: from memory, else from the vault
    _routes: dict[str, tuple[list[str], float]] = field(default_factory=dict)
    _routes_generation: int = 0

    async def route(self, merchant: Merchant) -> list[str]:
        """The merchant's PSPs in order; remembered for a few seconds (routing rarely changes),
        and forgotten at once when it does (see gateway_svc.service)."""
        cached = self._routes.get(merchant.id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        generation = self._routes_generation
        route = [
            psp
            for psp in await self.repository.psp_route(merchant.id)
            if psp in self.router.connectors
        ]
        if generation == self._routes_generation:  # not forgotten while it was read
            self._routes[merchant.id] = (route, time.monotonic() + ROUTE_CACHE_SECONDS)
        return route

    def forget_routes(self) -> None:
        self._routes.clear()
        self._routes_generation += 1
