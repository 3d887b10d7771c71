"""What webhooks are about and when they are tried, as plain functions: the event types a
merchant can subscribe to, the checks of an endpoint's fields, and the retry schedule."""

from __future__ import annotations

import random
from collections.abc import Sequence

from paymesh.platform.merchant_input import card_number_violation
from paymesh.platform.problems import FieldViolation

EVENT_TYPES = frozenset(
    {
        "payment_intent.created",
        "payment_intent.requires_capture",
        "payment_intent.requires_action",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.disputed",
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
        "refund.created",
        "refund.succeeded",
        "refund.failed",
        "payment_method.created",
        "payment_method.detached",
        "subscription.created",
        "subscription.updated",
        "subscription.past_due",
        "subscription.canceled",
        "rebill.succeeded",
        "rebill.failed",
        "rebill.action_required",
        "webhook_endpoint.disabled",
    }
)
ALL_EVENTS = "*"
MAX_DESCRIPTION = 1000
MAX_ENABLED_EVENTS = len(EVENT_TYPES)

# Standard Webhooks' suggested schedule: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 14 h, 20 h and 24 h after each failure (about three days in all).
DEFAULT_RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.1  # each wait is drawn within ±10 % of the schedule's


def enabled_events_violations(enabled_events: Sequence[str]) -> list[FieldViolation]:
    if not enabled_events:
        return [FieldViolation("enabled_events", "missing", "name at least one event type or *")]
    if len(enabled_events) > MAX_ENABLED_EVENTS:
        return [FieldViolation("enabled_events", "too_many", "too many event types")]
    return [
        FieldViolation(
            f"enabled_events[{i}]", "invalid_event_type", "an event type of /v1/events, or *"
        )
        for i, event_type in enumerate(enabled_events)
        if event_type != ALL_EVENTS and event_type not in EVENT_TYPES
    ]


def description_violation(description: str) -> FieldViolation | None:
    if len(description) > MAX_DESCRIPTION:
        return FieldViolation(
            "description", "too_long", f"description must be at most {MAX_DESCRIPTION} characters"
        )
    return card_number_violation("description", description)


def retry_delay(
    attempts_made: int, schedule: Sequence[float], rng: random.Random | None = None
) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones, or None when the
    schedule is spent (the delivery is dead-lettered)."""
    if attempts_made >= len(schedule):
        return None
    base = schedule[attempts_made]
    return base * (1 + (rng or random).uniform(-JITTER, JITTER))


def parse_schedule(text: str) -> tuple[float, ...]:
    """`0,5,300` → (0.0, 5.0, 300.0): the waits before attempts 1, 2, 3, …"""
    schedule = tuple(float(part) for part in text.split(",") if part.strip())
    if not schedule or any(s < 0 for s in schedule):
        raise ValueError("a retry schedule is one or more comma-separated seconds ≥ 0")
    return schedule
