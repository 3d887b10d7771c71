"""A merchant's change to a subscription as plain rules: what it may say, what it changes, and
when a new card retries the open period at once. No I/O here.

A new amount and metadata count from the next period: the open period keeps the amount it
was billed at. A new card is charged from the next attempt on. A past_due or unpaid
subscription given a card is retried at once: the open period gets one attempt now, with
that card, under that attempt's own key, so the PSP never sees two charges for one attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paymesh.platform.merchant_input import (
    METADATA_MAX_PAIRS,
    amount_violation,
    metadata_violations,
    payment_method_violation,
)
from paymesh.platform.problems import FailedPrecondition, FieldViolation, InvalidArgument
from rebill_svc.domain.subscriptions import Status

# A subscription in one of these states is retried at once when given a card.
RESCUABLE = (Status.PAST_DUE, Status.UNPAID)


@dataclass(frozen=True)
class SubscriptionUpdate:
    payment_method: str | None  # None: unchanged
    amount: int | None  # None: unchanged
    metadata: dict[str, str]  # keys to set; a key set to "" is removed


def subscription_update(
    *, payment_method: str | None, amount: int | None, metadata: dict[str, str]
) -> SubscriptionUpdate:
    """The update, or InvalidArgument naming every field at fault."""
    violations = [
        v
        for v in (
            None if payment_method is None else _payment_method_violation(payment_method),
            None if amount is None else amount_violation("amount", amount),
        )
        if v
    ]
    violations += metadata_violations(metadata)
    if violations:
        raise InvalidArgument(violations)
    return SubscriptionUpdate(payment_method, amount, metadata)


def _payment_method_violation(payment_method: str) -> FieldViolation | None:
    """A card given must be a vault token (an empty one too: it would clear nothing)."""
    if not payment_method:
        return FieldViolation("payment_method", "invalid_payment_method", "a pm_… token")
    return payment_method_violation(payment_method)


def changed_values(
    status: str, current: dict[str, Any], update: SubscriptionUpdate
) -> dict[str, Any]:
    """The subscription's columns that `update` changes (`current`: their values now)."""
    if status == Status.CANCELED:
        raise FailedPrecondition(
            "a subscription that is canceled cannot be updated", reason="subscription_canceled"
        )
    if update.amount is not None and (
        bad := amount_violation("amount", update.amount, current["currency"])
    ):
        raise InvalidArgument([bad])  # the currency's minor units: known once it is read
    values: dict[str, Any] = {}
    if update.payment_method is not None and update.payment_method != current["payment_method"]:
        values["payment_method"] = update.payment_method
    if update.amount is not None and update.amount != current["amount"]:
        values["amount"] = update.amount
    metadata = merged_metadata(current["metadata"], update.metadata)
    if metadata != current["metadata"]:
        values["metadata"] = metadata
    return values


def merged_metadata(current: dict[str, str], changes: dict[str, str]) -> dict[str, str]:
    merged = {**current, **changes}
    merged = {key: value for key, value in merged.items() if value != ""}
    if len(merged) > METADATA_MAX_PAIRS:
        raise InvalidArgument.for_field(
            "metadata", "too_many_keys", f"at most {METADATA_MAX_PAIRS} pairs in all"
        )
    return merged


def retries_now(status: str, update: SubscriptionUpdate) -> bool:
    """Whether the update retries the open period at once: a card given to a subscription
    whose open period is unpaid (the same card again too: a customer may have added funds)."""
    return update.payment_method is not None and status in RESCUABLE


def open_period_attempt(job_status: str, attempt: int, attempt_runs: int) -> int | None:
    """The attempt of the open period's job to run now with the new card, or None when none
    may start now. A next attempt not started yet runs now instead of at its time (its key has
    never reached the gateway); a period given up gets a new attempt after its last; an attempt
    already started (it may be at the PSP, or its outcome unknown) is never run beside: it
    finishes with the card it started with, and the next attempt, if any, takes the new one."""
    if job_status == "scheduled" or (job_status == "queued" and attempt_runs == 0):
        return attempt
    if job_status == "failed":
        return attempt + 1
    return None
