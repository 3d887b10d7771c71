"""localstripe, with Stripe's documented test cards declined where Stripe declines them.

    python -m dev.localstripe_cards --port 8420 --from-scratch   (localstripe's own options)

localstripe declines 4000000000000002 and 4000000000009995 only when a card is attached to a
customer, and without a `decline_code`; paymesh never attaches a card, so on the stripe
route both were charged, while the sandbox PSP (and Stripe) decline them at the charge. This
launcher makes localstripe's charges fail for them as Stripe's do, so that a test card gives
the same outcome on both routes (README, "Test cards"):

  4000000000000002  402 card_declined, decline_code generic_decline
  4000000000009995  402 card_declined, decline_code insufficient_funds
  4000000000000119  402 processing_error

Everything else is localstripe's own behaviour. Standard library and localstripe only: the
compose file runs this file on its own."""

from __future__ import annotations

import sys

from localstripe import resources
from localstripe.server import start

# card number -> (failure code, decline code, message), as Stripe documents its test cards
DECLINED_AT_CHARGE = {
    "4000000000000002": ("card_declined", "generic_decline", "Your card was declined."),
    "4000000000009995": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "4000000000000119": (
        "processing_error",
        "",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
}


def _card_number(charge: resources.Charge) -> str:
    method = resources.PaymentMethod._api_retrieve(charge.payment_method)
    return getattr(method, "_card_number", "")


def _decline_of(charge: resources.Charge) -> tuple[str, str, str] | None:
    return DECLINED_AT_CHARGE.get(_card_number(charge))


def install() -> None:
    """Patches localstripe's card rules in this process (before its server starts)."""
    charging_is_declined = resources.PaymentMethod._charging_is_declined

    def _charging_declined(method) -> bool:
        number = getattr(method, "_card_number", "")
        return number in DECLINED_AT_CHARGE or charging_is_declined(method)

    set_auth_failure = resources.Charge._set_auth_failure

    def _set_failure(charge) -> None:
        set_auth_failure(charge)
        decline = _decline_of(charge)
        if decline is not None:
            charge.failure_code, _, charge.failure_message = decline

    raise_failure = resources.Charge._raise_failure

    def _raise(charge) -> None:
        decline = _decline_of(charge)
        if decline is None:
            raise_failure(charge)
        code, decline_code, message = decline
        error = {"code": code, "charge": charge.id}
        if decline_code:
            error["decline_code"] = decline_code
        raise resources.UserError(402, message, error)

    last_payment_error = resources.PaymentIntent.last_payment_error

    def _last_error(intent):
        error = last_payment_error.fget(intent)
        if error and intent.latest_charge is not None:
            decline = _decline_of(intent.latest_charge)
            if decline is not None and decline[1]:
                error = {**error, "decline_code": decline[1]}
        return error

    resources.PaymentMethod._charging_is_declined = _charging_declined
    resources.Charge._set_auth_failure = _set_failure
    resources.Charge._raise_failure = _raise
    resources.PaymentIntent.last_payment_error = property(_last_error)


if __name__ == "__main__":
    install()
    sys.argv[0] = "localstripe"
    sys.exit(start())
