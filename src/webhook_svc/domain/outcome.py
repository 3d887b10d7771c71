"""What one delivery attempt comes to, decided from the endpoint's answer alone."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from webhook_svc.domain.rules import retry_delay
from webhook_svc.domain.status import DeliveryStatus, Result

GONE = 410
# Answers whose Retry-After is honoured (up to a cap): the endpoint says when it can take more.
THROTTLED = (429, 503)


@dataclass(frozen=True)
class Answer:
    """One POST's answer: its HTTP status, or the error that says why there was none."""

    status: int | None
    retry_after: float | None = None  # seconds
    error: str | None = None


@dataclass(frozen=True)
class Decision:
    result: Result
    next_in_seconds: float | None  # None: the delivery's due time stays
    error: str | None


def classify(
    answer: Answer,
    attempt: int,
    schedule: Sequence[float],
    retry_after_max_seconds: float,
    rng: random.Random | None = None,
) -> Decision:
    """Attempt `attempt` (1 for the first) answered `answer`: a 2xx succeeded; 410 is gone
    (the endpoint is disabled); anything else is tried again after the schedule's next wait
    (longer if a 429 or 503 says Retry-After), or is dead once the schedule is spent."""
    status = answer.status
    if status is not None and 200 <= status < 300:
        return Decision(Result.SUCCEEDED, None, None)
    if status == GONE:
        return Decision(Result.GONE, None, "gone")
    error = answer.error or f"http_{status}"
    wait = retry_delay(attempt, schedule, rng)
    if wait is None:
        return Decision(Result.DEAD, None, error)
    if status in THROTTLED and answer.retry_after is not None:
        wait = max(wait, min(answer.retry_after, retry_after_max_seconds))
    return Decision(Result.FAILED, wait, error)


def deferred(wait_seconds: float | None) -> Decision:
    """Not sent (the endpoint's circuit is open, or too little of the lease is left): no
    attempt spent, due again after `wait_seconds` (None: at once)."""
    return Decision(Result.DEFERRED, wait_seconds, None)


@dataclass(frozen=True)
class Sent:
    """One recorded attempt: its number in its round (1 starts a round) and the endpoint's
    HTTP status (None when no answer came)."""

    attempt: int
    status_code: int | None


def attempt_outcomes(attempts: Sequence[Sent], status: DeliveryStatus) -> list[str]:
    """What each of a delivery's attempts (oldest first) came to, as operators read them: a
    2xx `succeeded`, a 410 `gone`; a failure that ended its round `dead` (a fresh round
    followed it, or it is the last attempt of a delivery given up on), any other `failed`."""
    given_up = status in (DeliveryStatus.DEAD, DeliveryStatus.DISCARDED)
    outcomes = []
    for index, sent in enumerate(attempts):
        code = sent.status_code
        following = attempts[index + 1] if index + 1 < len(attempts) else None
        if code is not None and 200 <= code < 300:
            outcomes.append(Result.SUCCEEDED.value)
        elif code == GONE:
            outcomes.append(Result.GONE.value)
        elif (following.attempt == 1) if following else given_up:
            outcomes.append(Result.DEAD.value)
        else:
            outcomes.append(Result.FAILED.value)
    return outcomes
