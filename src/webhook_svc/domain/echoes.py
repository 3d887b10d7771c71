"""When a PSP's webhook only echoes what the gateway already recorded.

Every charge paymesh captures is announced back by its PSP. webhook_svc stores the gateway's
own events, so it can tell such an echo from news without asking the gateway: the webhook is
then recorded as `already_applied` where it lands. The rule is strict on purpose. Only a
capture that names the payment the gateway recorded as succeeded (the same PSP and PSP
reference), for exactly the amount it received and in its currency, is an echo; anything else
(a refund, a dispute, an authentication's end, another amount or currency, a payment
webhook_svc has no success of, yet or ever) goes to the gateway, which decides under the
payment's lock as it always has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REASON = "echo_of_recorded_event"
SUCCEEDED = "payment_intent.succeeded"


@dataclass(frozen=True)
class Capture:
    """A PSP webhook's report that it captured `amount` of the payment it calls
    `psp_reference`."""

    psp: str
    psp_reference: str
    amount: int
    currency: str


@dataclass(frozen=True)
class RecordedSuccess:
    """A payment's success as the gateway's own event told webhook_svc."""

    payment_intent: str
    psp: str
    psp_reference: str
    status: str
    amount_received: int | None
    currency: str

    @classmethod
    def of_event(cls, psp_reference: str, shown: Mapping[str, Any]) -> RecordedSuccess:
        """From a `payment_intent.succeeded` event: the PSP's reference it carried and its
        object as the REST API shows it (int64 amounts as JSON strings)."""
        return cls(
            payment_intent=_text(shown.get("id")),
            psp=_text(shown.get("psp")),
            psp_reference=psp_reference,
            status=_text(shown.get("status")),
            amount_received=_minor_units(shown.get("amount_received")),
            currency=_text(shown.get("currency")),
        )


def echoes(capture: Capture, recorded: RecordedSuccess | None) -> bool:
    """The capture says nothing the recorded success did not: same payment at the same PSP,
    exactly the amount received, the same currency."""
    return (
        recorded is not None
        and recorded.status == "succeeded"
        and bool(recorded.payment_intent)
        and bool(capture.psp_reference)
        and (capture.psp, capture.psp_reference) == (recorded.psp, recorded.psp_reference)
        and capture.amount > 0
        and capture.amount == recorded.amount_received
        and bool(capture.currency)
        and capture.currency.lower() == recorded.currency
    )


def echoed_intent(
    captures: Sequence[Capture | None], recorded: Mapping[str, RecordedSuccess]
) -> str | None:
    """The payment intent a webhook's facts only echo, or None when any of them is news.
    `captures`: the webhook's facts, None for each that is not a capture; `recorded`: the
    successes webhook_svc holds, by PSP reference."""
    if not captures:
        return None
    intents = set()
    for capture in captures:
        if capture is None:
            return None
        known = recorded.get(capture.psp_reference)
        if known is None or not echoes(capture, known):
            return None
        intents.add(known.payment_intent)
    return intents.pop() if len(intents) == 1 else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _minor_units(value: Any) -> int | None:
    """An amount as the API writes it (an int64 as a decimal string, or a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
