"""A delivery's statuses, what one send can come to, and the one table of legal moves.

The delivery stores ask `move()` (in Python) or render `TRANSITIONS` into their UPDATE's SET
and WHERE (in SQL), so that no other place writes down which move is legal."""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # to be sent: due, waiting for a retry, or being sent (leased)
    SUCCEEDED = "succeeded"  # the endpoint answered 2xx
    DEAD = "dead"  # given up: no attempt left, or the endpoint answered 410
    DISCARDED = "discarded"  # a dead one an operator reviewed and dropped: never sent again


class Result(StrEnum):
    """What one send came to (the `webhook_deliveries_total` metric's `result`)."""

    SUCCEEDED = "succeeded"  # 2xx
    FAILED = "failed"  # tried again later
    DEAD = "dead"  # failed, and the schedule is spent
    GONE = "gone"  # 410: the endpoint is disabled
    DEFERRED = "deferred"  # not sent (the endpoint's circuit is open, or no time left to send)


class Action(StrEnum):
    """A move of a delivery that is not a send's result."""

    REDELIVER = "redeliver"  # the merchant asks for an event again (a fresh round of attempts)
    RETRY = "retry"  # an operator sends a dead delivery again (a fresh round of attempts)
    DISCARD = "discard"  # an operator drops a dead delivery


D = DeliveryStatus

TRANSITIONS: dict[Result | Action, dict[DeliveryStatus, DeliveryStatus]] = {
    Result.SUCCEEDED: {D.PENDING: D.SUCCEEDED},
    Result.FAILED: {D.PENDING: D.PENDING},
    Result.DEAD: {D.PENDING: D.DEAD},
    Result.GONE: {D.PENDING: D.DEAD},
    Result.DEFERRED: {D.PENDING: D.PENDING},
    Action.REDELIVER: {status: D.PENDING for status in DeliveryStatus},
    Action.RETRY: {D.DEAD: D.PENDING},
    Action.DISCARD: {D.DEAD: D.DISCARDED},
}

# A result that spends no attempt and writes no attempt's record: nothing was sent.
UNSENT = frozenset({Result.DEFERRED})
# Results that let the object's next events to the endpoint go (the delivery left `pending`).
SETTLED = frozenset(r for r in Result if D.PENDING not in TRANSITIONS[r].values())


def sources(move: Result | Action) -> tuple[DeliveryStatus, ...]:
    """The statuses `move` may start from (for a conditional UPDATE's WHERE)."""
    return tuple(TRANSITIONS[move])


def sendable() -> tuple[DeliveryStatus, ...]:
    """The statuses a delivery may be claimed for sending in: those a send's result moves."""
    return tuple(dict.fromkeys(s for result in Result for s in TRANSITIONS[result]))


def move(status: DeliveryStatus, change: Result | Action) -> DeliveryStatus | None:
    """The status after `change`, or None where it does not apply (the write is skipped)."""
    return TRANSITIONS[change].get(DeliveryStatus(status))
