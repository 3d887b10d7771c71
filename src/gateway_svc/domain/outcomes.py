"""What a PSP call can tell us, as a payments engineer must read it: one taxonomy, read
everywhere a PSP answers (the connectors, the vault client, routing, authorize, the recovery
sweep), so that only an issuer's decline is ever reported as one.

- **Declined by the issuer** (`PspDeclined`, hard or soft, with the PSP's code): final for
  this attempt, and the only outcome a merchant hears as `card_declined`.
- **The PSP failed** (`PspTrouble`): `NotProcessed` is proof that nothing happened (the
  connection was refused, the PSP documents the 5xx as not processed, or our own breaker never
  sent it): retry, or fail over. `OutcomeUnknown` (a timeout, a lost answer) is the hard one:
  the PSP may have done it. It is never failed over and never guessed: only asking the PSP
  again, under the same idempotency key, settles it (the recovery sweep). `PspRefused`, a
  refusal of the request itself (a 4xx other than a decline), proves nothing happened too.
- **The PSP does not know our card reference** (`CardUnknownAtPsp`): a restarted or migrated
  PSP, a deleted customer, an expired token. Nothing happened; the vault provisions the card
  again from the card it holds, once, and the charge is sent once more.
- **The PSP would not hold the card** (`CardNotProvisioned`): it refused to create it from
  what the vault holds (Stripe asks for the CVC the vault has long forgotten). Not a decline:
  no issuer saw it. Another PSP may take it; if none does, the merchant hears
  `card_reprovision_failed`, soft.
- **The PSP needs the customer** (`CustomerActionRequired`, 3-D Secure): an answer, neither a
  decline nor a failure of the PSP; the PSP decides once the customer has acted
  (`AuthenticationFailed` if they did not).

Every answer names the PSP that gave it, so that a merchant is told where it happened."""

from __future__ import annotations

from dataclasses import dataclass

# last_payment_error.code of an intent no PSP could take because none holds its card.
CARD_REPROVISION_FAILED = "card_reprovision_failed"


@dataclass(frozen=True)
class Authorization:
    reference: str
    captured: bool


class PspDeclined(Exception):
    """The issuer declined the card: the only outcome that is a decline."""

    def __init__(self, decline_code: str, message: str, kind: str, psp: str = ""):
        super().__init__(message)
        self.decline_code = decline_code
        self.message = message
        self.kind = kind  # hard: do not retry this card; soft: a later retry may pass
        self.psp = psp  # the PSP that answered

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


class CardUnknownAtPsp(Exception):
    """The PSP does not know the card reference it was sent: nothing happened. The answer is
    to provision the card there again (the vault), not to fail the payment."""

    def __init__(self, psp: str, reference: str = ""):
        super().__init__(f"{psp}: card reference unknown")
        self.psp = psp
        self.reference = reference


class CardNotProvisioned(Exception):
    """The PSP would not create the card from what the vault holds (`code`: the PSP's reason,
    e.g. a CVC it requires): nothing happened there, and no issuer was asked."""

    def __init__(self, psp: str, code: str):
        super().__init__(f"{psp}: card not provisioned ({code})")
        self.psp = psp
        self.code = code

    def as_payment_error(self) -> dict[str, str]:
        return {
            "code": CARD_REPROVISION_FAILED,
            "decline_code": "",
            "message": (
                "The payment processor does not hold this card and would not take it again"
                " without the customer (its security code). Nothing was charged; retry later,"
                " or collect the card again."
            ),
            "type": "soft",
        }


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


# The answers that prove the PSP did nothing with this request: the router tries the next PSP.
NOTHING_HAPPENED = (NotProcessed, PspRefused, CardUnknownAtPsp, CardNotProvisioned)
# The PSP answered (whatever it said): a breaker counts these as the PSP's good health.
ANSWERS = (PspDeclined, PspRefused, CardUnknownAtPsp, CardNotProvisioned, CustomerActionRequired)
