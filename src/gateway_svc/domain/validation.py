"""The payment rules on input, as plain functions: what a new intent may say, and what a
capture or a refund may take. No I/O here; the state machine is in `status`."""

from __future__ import annotations

from urllib.parse import urlsplit

from paymesh.platform.merchant_input import (
    CURRENCIES,
    MAX_AMOUNT,
    amount_violation,
    card_number_violation,
    id_shaped,
    metadata_violations,
    payment_method_violation,
)
from paymesh.platform.problems import FailedPrecondition, FieldViolation, InvalidArgument

__all__ = ["CURRENCIES", "MAX_AMOUNT", "amount_violation", "id_shaped", "metadata_violations"]

DESCRIPTION_MAX = 1000
RETURN_URL_MAX = 2048
CAPTURE_METHODS = ("automatic", "manual")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# The reasons Stripe takes on a cancel (it sets the others itself: automatic, failed_invoice…).
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")


def validate_new_intent(
    *,
    amount: int,
    currency: str,
    capture_method: str,
    confirm: bool,
    payment_method: str,
    description: str,
    metadata: dict[str, str],
    return_url: str = "",
) -> None:
    violations = [v for v in [amount_violation("amount", amount, currency)] if v]
    if currency not in CURRENCIES:
        violations.append(
            FieldViolation("currency", "invalid_currency", "a lowercase ISO-4217 code, e.g. usd")
        )
    if capture_method not in ("", *CAPTURE_METHODS):
        violations.append(
            FieldViolation("capture_method", "invalid_capture_method", "automatic or manual")
        )
    payment_method_bad = payment_method_violation(payment_method)
    if payment_method_bad:
        violations.append(payment_method_bad)
    if confirm and not payment_method:
        violations.append(
            FieldViolation("payment_method", "missing", "confirm needs a payment_method")
        )
    if len(description) > DESCRIPTION_MAX:
        violations.append(
            FieldViolation(
                "description", "too_long", f"description is at most {DESCRIPTION_MAX} characters"
            )
        )
    elif found := card_number_violation("description", description):
        violations.append(found)
    violations += metadata_violations(metadata)
    if return_url and not confirm:
        violations.append(
            FieldViolation("return_url", "needs_confirm", "return_url is given with confirm")
        )
    elif found := return_url_violation(return_url):
        violations.append(found)
    if violations:
        raise InvalidArgument(violations)


def return_url_violation(return_url: str) -> FieldViolation | None:
    """Where the PSP may send the customer back after authentication: an absolute http(s)
    URL (empty: none)."""
    if not return_url:
        return None
    try:
        parts = urlsplit(return_url)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.netloc
        or len(return_url) > RETURN_URL_MAX
        or any(c.isspace() or ord(c) < 32 for c in return_url)
    ):
        return FieldViolation(
            "return_url",
            "invalid_url",
            f"return_url must be an absolute http(s) URL of at most {RETURN_URL_MAX} characters",
        )
    return card_number_violation("return_url", return_url)


def cancellation_reason(reason: str) -> str | None:
    """A cancel's reason, if it gave one (None), or InvalidArgument naming it."""
    if reason and reason not in CANCELLATION_REASONS:
        raise InvalidArgument.for_field(
            "cancellation_reason", "invalid_reason", ", ".join(CANCELLATION_REASONS)
        )
    return reason or None


def capture_amount(requested: int, capturable: int, currency: str) -> int:
    """What to capture: all that is capturable unless less was asked for."""
    if requested == 0:
        return capturable
    if not 1 <= requested <= capturable:
        raise InvalidArgument.for_field(
            "amount_to_capture",
            "invalid_amount",
            f"amount_to_capture must be from 1 to the capturable {capturable}",
        )
    if bad := amount_violation("amount_to_capture", requested, currency):
        raise InvalidArgument([bad])
    return requested


def refund_amount(requested: int, received: int, refunded: int, reason: str) -> int:
    """What to refund: what is left unless less was asked for; never beyond what was captured.
    A payment with nothing left is `charge_already_refunded` whatever amount was asked for."""
    left = received - refunded
    violations = []
    if reason and reason not in REFUND_REASONS:
        violations.append(FieldViolation("reason", "invalid_reason", ", ".join(REFUND_REASONS)))
    if requested and left > 0 and not 1 <= requested <= left:
        violations.append(
            FieldViolation("amount", "invalid_amount", f"amount must be from 1 to {left}")
        )
    if violations:
        raise InvalidArgument(violations)
    if left <= 0:
        raise FailedPrecondition(
            "this payment has nothing left to refund", reason="charge_already_refunded"
        )
    return requested or left
