"""What a PSP call can tell us, as a payments engineer must read it.

A decline and a refusal are answers: final, nothing happened. `NotProcessed` is proof that
nothing happened either (the connection was refused, the PSP documents the 5xx as not
processed, or our own breaker never sent it): safe to fail over. `OutcomeUnknown` is the
hard one (a timeout, a lost answer): the PSP may have done it. It is never failed over and
never guessed: only asking the PSP again, under the same idempotency key, settles it.
`CustomerActionRequired` is an answer too (3-D Secure): the PSP decides once the customer
has acted, and it is neither a decline nor a failure of the PSP."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Authorization:
    reference: str
    captured: bool


class PspDeclined(Exception):
    def __init__(self, decline_code: str, message: str, kind: str):
        super().__init__(message)
        self.decline_code = decline_code
        self.message = message
        self.kind = kind  # hard: do not retry this card; soft: a later retry may pass

    def as_payment_error(self) -> dict[str, str]:
        return {
            "code": "card_declined",
            "decline_code": self.decline_code,
            "message": self.message,
            "type": self.kind,
        }


class AuthenticationFailed(PspDeclined):
    """The customer failed (or abandoned) the PSP's authentication (3-D Secure): nothing was
    charged, and the intent needs a payment method again, as Stripe says it."""

    def __init__(self, message: str = "The customer did not complete 3-D Secure authentication."):
        super().__init__("", message, "soft")

    def as_payment_error(self) -> dict[str, str]:
        return {
            "code": "payment_intent_authentication_failure",
            "decline_code": "",
            "message": self.message,
            "type": self.kind,
        }


class CustomerActionRequired(Exception):
    """The PSP needs the customer first (3-D Secure): they act at `url`; then the PSP decides
    `reference` (its payment) as authorized, charged or failed. Nothing is held until then."""

    def __init__(self, psp: str, reference: str, url: str):
        super().__init__(f"{psp} needs the customer for {reference}")
        self.psp = psp
        self.reference = reference
        self.url = url


class PspRefused(Exception):
    """The PSP refused the request itself (a 4xx other than a decline): nothing happened."""


class PspTrouble(Exception):
    """The PSP did not give an answer. `psp_at_fault` is False when the PSP is not to blame
    (our own process was too busy to read its answer in time), so no breaker counts it."""

    def __init__(self, message: str, psp_at_fault: bool = True):
        super().__init__(message)
        self.psp_at_fault = psp_at_fault


class NotProcessed(PspTrouble):
    """Provably nothing happened at the PSP: retry, or fail over."""


class OutcomeUnknown(PspTrouble):
    """The PSP may or may not have done it: ask again under the same idempotency key."""
