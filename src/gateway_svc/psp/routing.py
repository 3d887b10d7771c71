"""Which PSP takes a payment, and how one PSP operation is tried.

The merchant's route is an ordered list of PSPs, each behind a circuit breaker (a failure
ratio over a sliding window, per operation: `gateway_svc.psp.breaker`).
One operation is retried under the SAME idempotency key, with exponential backoff and full
jitter (tenacity), within a hard deadline: a retry can only repeat or reveal what the first
attempt did, never do it twice. The router fails over to the next PSP only on proof that
nothing happened (`NotProcessed`, a refusal, an open breaker, a card the PSP would not hold).
A decline ends the route, and so does the PSP's need of the customer (3-D Secure: the
customer answers that PSP); an `OutcomeUnknown` ends it too, and is settled by asking that
PSP again (the recovery sweep).

A PSP that does not know the card reference it was sent (`CardUnknownAtPsp`: it restarted,
migrated, lost a customer) gets the card again: the vault provisions it there once more from
the card it holds, and the charge is sent once more, under an attempt key of its own (the
first one's answer may be kept by the PSP under its key). The key in flight is recorded on
the intent before each charge (`on_attempt`), so the recovery sweep always asks the PSP about
the one charge that may have happened.

Only the PSP's own failures count against its breaker: never a decline, a refusal, a wait for
the customer, the vault, or a timeout our own busy loop caused. Every attempt is one call the
breaker judges: a payment's three attempts at a dead PSP are three failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from gateway_svc.domain.outcomes import (
    ANSWERS,
    NOTHING_HAPPENED,
    Authorization,
    CardNotProvisioned,
    CardUnknownAtPsp,
    NotProcessed,
    OutcomeUnknown,
    PspTrouble,
)
from gateway_svc.metrics import PSP_CALL_ERRORS, PSP_CIRCUIT_STATE, PSP_FAILOVERS
from gateway_svc.psp.breaker import (
    BreakerPolicy,
    CircuitOpen,
    Outcome,
    SlidingWindowBreaker,
    State,
)
from gateway_svc.psp.connectors import Connector
from paymesh.platform.http_spans import resend

log = structlog.get_logger(__name__)
T = TypeVar("T")
CARD = "card"  # the card's creation at the PSP (made by the vault), a step of authorize


# The suffix of an authorization's attempt key once its card was provisioned again.
REPROVISIONED = ":reprovisioned"


def psp_attempt_key(pending_key: str, psp: str) -> str:
    """The idempotency key an authorization is sent to `psp` under: the intent's pending key
    (its attempt key, or that key with REPROVISIONED) and the PSP."""
    return f"{pending_key}:{psp}"


class NoPspAvailable(Exception):
    """Every PSP of the route provably did nothing (failed, refused or skipped).
    `card_refusal`: set when no PSP failed and some would not hold the card (none has it and
    none would take it from the vault): the card, not the PSPs, is what is missing now."""

    def __init__(self, message: str, card_refusal: CardNotProvisioned | None = None):
        super().__init__(message)
        self.card_refusal = card_refusal


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    deadline_seconds: float = 8.0  # one PSP operation, all its attempts and waits included
    backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0


def _log_change(psp: str, old: State, new: State) -> None:
    log.warning("psp_circuit_changed", psp=psp, old=old.name.lower(), new=new.name.lower())


def make_breaker(psp: str, policy: BreakerPolicy) -> SlidingWindowBreaker:
    breaker = SlidingWindowBreaker(psp, policy, on_change=_log_change)
    # Read at each scrape: an open breaker's cool-down ends without a call to notice it.
    PSP_CIRCUIT_STATE.labels(psp).set_function(lambda: float(breaker.state))
    return breaker


def judged(error: BaseException | None) -> Outcome:
    """What a PSP call's end says about the PSP."""
    if error is None or isinstance(error, ANSWERS):
        return Outcome.SUCCESS  # the PSP answered
    if isinstance(error, PspTrouble) and error.psp_at_fault:
        return Outcome.FAILURE
    return Outcome.IGNORED  # our overload, the vault, a cancellation: not the PSP's doing


class PspRouter:
    def __init__(
        self,
        connectors: dict[str, Connector],
        breakers: dict[str, SlidingWindowBreaker],
        policy: RetryPolicy,
    ):
        self.connectors = connectors
        self.breakers = breakers
        self.policy = policy

    def first_available(self, route: list[str]) -> str | None:
        """The first PSP of the route whose breaker does not skip it."""
        return next((psp for psp in route if self.breakers[psp].state is not State.OPEN), None)

    def observe_card(self, psp: str, error: BaseException | None) -> None:
        """The PSP's answer to the vault's creation of a card (not a cached one): the `card`
        operation's window judges it."""
        breaker = self.breakers.get(psp)
        if breaker is not None:
            breaker.observe(CARD, judged(error))

    async def authorize(
        self,
        route: list[str],
        card_for: Callable[[str], Awaitable[str]],
        *,
        amount: int,
        currency: str,
        capture: bool,
        attempt_key: str,
        on_attempt: Callable[[str, str], Awaitable[None]],
        reprovision: Callable[[str, str], Awaitable[str]] | None = None,
        return_url: str = "",
    ) -> tuple[str, Authorization]:
        """(psp, authorization). Raises PspDeclined (final), CustomerActionRequired (that PSP
        waits for the customer, who comes back to `return_url`), OutcomeUnknown (the PSP in
        the intent's row may hold money), NoPspAvailable (nothing happened anywhere).
        `card_for` may raise PspDeclined, NotProcessed or CardNotProvisioned (the card could
        not be created at that PSP); `reprovision(psp, unknown_reference)` makes the card again
        at a PSP that does not know it (None: such a PSP is failed over)."""
        failures: list[str] = []
        card_refusal: CardNotProvisioned | None = None
        psp_failed = False
        for psp in route:
            try:
                # Creating the card at the PSP (through the vault) is part of the PSP's health;
                # an open breaker skips the PSP before even that.
                # (Its outcome is judged by observe_card, only when the PSP was asked.)
                card = await self.call(psp, None, lambda psp=psp: card_for(psp))
                authorization = await self.charge(
                    psp,
                    card,
                    amount=amount,
                    currency=currency,
                    capture=capture,
                    pending_key=attempt_key,
                    on_attempt=on_attempt,
                    reprovision=reprovision,
                    return_url=return_url,
                )
                return psp, authorization
            except NOTHING_HAPPENED as error:
                if isinstance(error, CardNotProvisioned):
                    card_refusal = error
                psp_failed = psp_failed or isinstance(error, NotProcessed)
                failures.append(f"{psp}: {error}")
                PSP_FAILOVERS.labels(psp).inc()
                log.warning("psp_failover", psp=psp, error=str(error))
        raise NoPspAvailable(
            "; ".join(failures) or "no PSP configured",
            None if psp_failed else card_refusal,
        )

    async def charge(
        self,
        psp: str,
        card: str,
        *,
        amount: int,
        currency: str,
        capture: bool,
        pending_key: str,
        on_attempt: Callable[[str, str], Awaitable[None]],
        reprovision: Callable[[str, str], Awaitable[str]] | None = None,
        return_url: str = "",
    ) -> Authorization:
        """One authorization at `psp` with the card's reference there, under `pending_key`
        (the attempt key, or that key + REPROVISIONED once the card was made again); once
        more, under the REPROVISIONED key, with the card provisioned again if the PSP does not
        know the reference (never twice). `on_attempt(psp, pending_key)` records where the
        charge goes before each send."""
        connector = self.connectors[psp]

        def send(card: str, pending_key: str) -> Callable[[], Awaitable[Authorization]]:
            return lambda: connector.authorize(
                card=card,
                amount=amount,
                currency=currency,
                capture=capture,
                idempotency_key=psp_attempt_key(pending_key, psp),
                return_url=return_url,
            )

        await on_attempt(psp, pending_key)
        try:
            return await self.call(psp, "authorize", send(card, pending_key))
        except CardUnknownAtPsp:
            if reprovision is None or pending_key.endswith(REPROVISIONED):
                raise
            log.warning("psp_card_unknown", psp=psp)
        # Judged by the vault's answers (observe_card), like the card's first creation.
        card = await self.call(psp, None, lambda unknown=card: reprovision(psp, unknown))
        pending_key += REPROVISIONED
        await on_attempt(psp, pending_key)
        # A PSP that does not know the card it just made is failed over (CardUnknownAtPsp).
        return await self.call(psp, "authorize", send(card, pending_key))

    async def call(self, psp: str, name: str | None, operation: Callable[[], Awaitable[T]]) -> T:
        """One PSP operation `name`: retried under its idempotency key, each attempt judged
        by the PSP's breaker, within the policy's deadline. NotProcessed only if no attempt
        may have happened. `name` None: a step the breaker gates but does not judge."""
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
                    with attempt, resend(attempt.retry_state.attempt_number - 1):
                        ticket = breaker.permit(probe=name is not None)
                        outcome = Outcome.IGNORED
                        try:
                            in_flight = True
                            result = await operation()
                            outcome = Outcome.SUCCESS
                            return result
                        except OutcomeUnknown as unknown:
                            maybe_done = unknown
                            outcome = judged(unknown)
                            raise
                        except Exception as error:
                            outcome = judged(error)
                            raise
                        finally:
                            in_flight = False
                            breaker.record(ticket, name or "", outcome if name else Outcome.IGNORED)
        except CircuitOpen:
            if maybe_done is not None:
                raise maybe_done from None
            raise NotProcessed(f"{psp}: circuit open", psp_at_fault=False) from None
        except TimeoutError:
            if in_flight or maybe_done is not None:
                PSP_CALL_ERRORS.labels(psp, name or CARD, "deadline").inc()
                raise OutcomeUnknown(f"{psp}: deadline spent", psp_at_fault=False) from None
            raise NotProcessed(f"{psp}: deadline spent", psp_at_fault=False) from None
        except NotProcessed:
            if maybe_done is not None:  # an earlier attempt may have done it
                raise maybe_done from None
            raise
        raise AssertionError("unreachable: tenacity reraises")
