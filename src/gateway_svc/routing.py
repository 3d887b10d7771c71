"""Which PSP authorizes a payment: the merchant's ordered list, each PSP behind a circuit
breaker (pybreaker), each call retried on retryable failures with exponential backoff and full
jitter within a deadline (tenacity), then failover to the next PSP. A decline ends it: never
retried, never failed over. Every attempt carries an idempotency key derived from the
confirm's, so a retry can never authorize twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pybreaker
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from gateway_svc.connectors import Authorization, Connector, PspDeclined, PspFailed, PspRetryable
from gateway_svc.metrics import PSP_CIRCUIT_STATE, PSP_FAILOVERS

log = structlog.get_logger(__name__)
_STATES = {"closed": 0, "half-open": 1, "open": 2}


class NoPspAvailable(Exception):
    """Every PSP of the route failed or was skipped (open breaker)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    deadline_seconds: float = 8.0
    backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0


class _StateGauge(pybreaker.CircuitBreakerListener):
    def state_change(self, breaker, old, new):
        PSP_CIRCUIT_STATE.labels(breaker.name).set(_STATES[new.name])
        log.warning("psp_circuit_changed", psp=breaker.name, old=old.name, new=new.name)


def make_breaker(psp: str, fail_max: int, reset_timeout: float) -> pybreaker.CircuitBreaker:
    breaker = pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_timeout,
        # A decline or a refused request is the card's or the caller's doing, not an outage.
        exclude=[PspDeclined, PspFailed],
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
        self._policy = policy

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
        """(psp, authorization); PspDeclined on a decline; NoPspAvailable when all failed."""
        failures = []
        for psp in route:
            # An open breaker refuses at once (CircuitBreakerError), without a network call,
            # until its cool-down lets one probe through (half-open).
            try:
                # The card is created at the PSP first (through the vault): part of its health.
                card = await self.call(psp, lambda psp=psp: card_for(psp))
                await on_attempt(psp)
                authorization = await self.call(
                    psp,
                    lambda c=self.connectors[psp], card=card, psp=psp: c.authorize(
                        card=card,
                        amount=amount,
                        currency=currency,
                        capture=capture,
                        idempotency_key=f"{attempt_key}:{psp}",
                    ),
                )
                return psp, authorization
            except (PspRetryable, pybreaker.CircuitBreakerError) as error:
                failures.append(f"{psp}: {error or type(error).__name__}")
                PSP_FAILOVERS.labels(psp).inc()
                log.warning("psp_failover", psp=psp, error=str(error))
        raise NoPspAvailable("; ".join(failures) or "no PSP configured")

    async def call(self, psp: str, operation: Callable[[], Awaitable]):
        """One PSP operation with retries, inside the PSP's circuit breaker."""
        policy = self._policy
        breaker = self.breakers[psp]
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline_seconds),
            wait=wait_random_exponential(
                multiplier=policy.backoff_seconds, max=policy.max_backoff_seconds
            ),
            retry=retry_if_exception_type(PspRetryable),
            reraise=True,
        ):
            with attempt, breaker.calling():
                return await operation()
        raise AssertionError("unreachable: tenacity reraises")
