"""The back office's subscription search: its free text names one subscription, a merchant or
a payment method, told apart by the id's prefix."""

from __future__ import annotations

from enum import StrEnum

from paymesh.platform.merchant_input import id_shaped
from paymesh.platform.problems import InvalidArgument


class SearchField(StrEnum):
    ID = "id"
    MERCHANT = "merchant_id"
    PAYMENT_METHOD = "payment_method"


PREFIXES = {
    "sub_": SearchField.ID,
    "acct_": SearchField.MERCHANT,
    "pm_": SearchField.PAYMENT_METHOD,
}


def parse_query(q: str) -> tuple[SearchField, str] | None:
    """The column `q` matches and the value (None: no free text). Anything else is invalid
    input named `q`, never echoed (it could be a card number)."""
    text = q.strip()
    if not text:
        return None
    for prefix, field in PREFIXES.items():
        if id_shaped(text, prefix):
            return field, text
    raise InvalidArgument.for_field(
        "q",
        "invalid_query",
        "q must be a subscription (sub_…), merchant (acct_…) or payment method (pm_…) id",
    )
