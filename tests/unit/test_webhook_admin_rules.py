"""The operators' moves of a merchant webhook delivery (issue 32): only a dead delivery may be
retried (a fresh round) or discarded, as the one transition table says, and each recorded
attempt reads as what it came to."""

from __future__ import annotations

import pytest

from webhook_svc.domain.outcome import Sent, attempt_outcomes
from webhook_svc.domain.status import Action, DeliveryStatus, Result, move, sendable, sources

D = DeliveryStatus


@pytest.mark.parametrize("status", list(DeliveryStatus))
def test_only_a_dead_delivery_is_retried_or_discarded(status):
    assert move(status, Action.RETRY) == (D.PENDING if status == D.DEAD else None)
    assert move(status, Action.DISCARD) == (D.DISCARDED if status == D.DEAD else None)


def test_a_discarded_delivery_is_never_sent_and_no_send_moves_it():
    assert D.DISCARDED not in sendable()
    assert all(move(D.DISCARDED, result) is None for result in Result)
    assert sources(Action.RETRY) == sources(Action.DISCARD) == (D.DEAD,)


def test_a_merchants_redelivery_still_sends_any_delivery_again():
    assert {move(status, Action.REDELIVER) for status in DeliveryStatus} == {D.PENDING}


def test_attempts_read_as_what_they_came_to_each_round_ending_dead_or_delivered():
    first_round = [Sent(1, 500), Sent(2, None), Sent(3, 500)]
    second_round = [Sent(1, 503), Sent(2, 200)]

    assert attempt_outcomes(first_round, D.DEAD) == ["failed", "failed", "dead"]
    assert attempt_outcomes(first_round, D.PENDING) == ["failed", "failed", "failed"]
    assert attempt_outcomes([*first_round, *second_round], D.SUCCEEDED) == [
        "failed",
        "failed",
        "dead",
        "failed",
        "succeeded",
    ]
    assert attempt_outcomes([Sent(1, 410)], D.DEAD) == ["gone"]
    assert attempt_outcomes([Sent(1, 500)], D.DISCARDED) == ["dead"]
    assert attempt_outcomes([], D.PENDING) == []
