"""Which PSP takes a payment, and how one PSP operation is tried.

The merchant's route is an ordered list of PSPs, each behind a circuit breaker (pybreaker).
One operation is retried under the SAME idempotency key, with exponential backoff and full
jitter (tenacity), within a hard deadline: a retry can only repeat or reveal what the first
attempt did, never do it twice. The router fails over to the next PSP only on proof that
nothing happened (`NotProcessed`, a refusal, an open breaker). A decline ends the route; an
`OutcomeUnknown` ends it too, and is settled by asking that PSP again (the recovery sweep).

Only the PSP's own failures count against its breaker: never a decline, a refusal, the
vault, or a timeout our own busy loop caused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pybreaker
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from gateway_svc.domain.outcomes import (
    Authorization,
    NotProcessed,
    OutcomeUnknown,
    PspRefused,
    PspTrouble,
)
from gateway_svc.metrics import PSP_CALL_ERRORS, PSP_CIRCUIT_STATE, PSP_FAILOVERS
from gateway_svc.psp.connectors import Connector
from paymesh.platform.http_spans import resend

log = structlog.get_logger(__name__)
_STATES = {"closed": 0, "half-open": 1, "open": 2}
T = TypeVar("T")


class NoPspAvailable(Exception):
    """Every PSP of the route provably did nothing (failed, refused or skipped)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    deadline_seconds: float = 8.0  # one PSP operation, all its attempts and waits included
    backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0


class _StateGauge(pybreaker.CircuitBreakerListener):
    def state_change(self, breaker, old, new):
        PSP_CIRCUIT_STATE.labels(breaker.name).set(_STATES[new.name])
        log.warning("psp_circuit_changed", psp=breaker.name, old=old.name, new=new.name)


def _not_the_psps_fault(error: BaseException) -> bool:
    return not (isinstance(error, PspTrouble) and error.psp_at_fault)


def make_breaker(psp: str, fail_max: int, reset_timeout: float) -> pybreaker.CircuitBreaker:
    breaker = pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_timeout,
        exclude=[_not_the_psps_fault],
        listeners=[_StateGauge()],
        name=psp,
    )
    PSP_CIRCUIT_STATE.labels(psp).set(0)
    return breaker


class PspRouter:
    def __init__(
        self,
        connectors: dict[str, Connector],
        breakers: dict[str, pybreaker.CircuitBreaker],
        policy: RetryPolicy,
    ):
        self.connectors = connectors
        self.breakers = breakers
        self.policy = policy

    def first_available(self, route: list[str]) -> str | None:
        """The first PSP of the route whose breaker does not skip it."""
        return next((psp for psp in route if self.breakers[psp].current_state != "open"), None)

    async def authorize(
        self,
        route: list[str],
        card_for: Callable[[str], Awaitable[str]],
        *,
        amount: int,
        currency: str,
        capture: bool,
        attempt_key: str,
        on_attempt: Callable[[str], Awaitable[None]],
    ) -> tuple[str, Authorization]:
        """(psp, authorization). Raises PspDeclined (final), OutcomeUnknown (the PSP in the
        intent's row may hold money), NoPspAvailable (nothing happened anywhere). `card_for`
        may raise PspDeclined or NotProcessed (the card could not be created at that PSP)."""
        failures = []
        for psp in route:
            connector = self.connectors[psp]
            try:
                # Creating the card at the PSP (through the vault) is part of the PSP's health;
                # an open breaker skips the PSP before even that.
                card = await self.call(psp, lambda psp=psp: card_for(psp))
                await on_attempt(psp)
                authorization = await self.call(
                    psp,
                    lambda card=card, connector=connector, psp=psp: connector.authorize(
                        card=card,
                        amount=amount,
                        currency=currency,
                        capture=capture,
                        idempotency_key=f"{attempt_key}:{psp}",
                    ),
                )
                return psp, authorization
            except (NotProcessed, PspRefused) as error:
                failures.append(f"{psp}: {error}")
                PSP_FAILOVERS.labels(psp).inc()
                log.warning("psp_failover", psp=psp, error=str(error))
        raise NoPspAvailable("; ".join(failures) or "no PSP configured")

    async def call(self, psp: str, operation: Callable[[], Awaitable[T]]) -> T:
        """One PSP operation: retried under its idempotency key, inside the PSP's breaker,
        within the policy's deadline. NotProcessed only if no attempt may have happened."""
        policy = self.policy
        breaker = self.breakers[psp]
        maybe_done: OutcomeUnknown | None = None
        in_flight = False
        try:
            async with asyncio.timeout(policy.deadline_seconds):
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(policy.attempts),
                    wait=wait_random_exponential(
                        multiplier=policy.backoff_seconds, max=policy.max_backoff_seconds
                    ),
                    retry=retry_if_exception_type(PspTrouble),
                    reraise=True,
                ):
                    # The breaker replaces the failure that trips it with its own error, so
                    # an unknown outcome is noted inside it, before that can happen.
                    with attempt, breaker.calling(), resend(attempt.retry_state.attempt_number - 1):
                        try:
                            in_flight = True
                            return await operation()
                        except OutcomeUnknown as unknown:
                            maybe_done = unknown
                            raise
                        finally:
                            in_flight = False
        except pybreaker.CircuitBreakerError:
            if maybe_done is not None:
                raise maybe_done from None
            raise NotProcessed(f"{psp}: circuit open", psp_at_fault=False) from None
        except TimeoutError:
            if in_flight or maybe_done is not None:
                PSP_CALL_ERRORS.labels(psp, "deadline").inc()
                raise OutcomeUnknown(f"{psp}: deadline spent", psp_at_fault=False) from None
            raise NotProcessed(f"{psp}: deadline spent", psp_at_fault=False) from None
        except NotProcessed:
            if maybe_done is not None:  # an earlier attempt may have done it
                raise maybe_done from None
            raise
        raise AssertionError("unreachable: tenacity reraises")
