"""The PSP circuit breaker's rule (gateway_svc.psp.breaker), on a fake clock: a failure ratio
over a sliding window per operation, a minimum of calls, a cool-down, probes."""

from __future__ import annotations

import pytest

from gateway_svc.psp.breaker import (
    BreakerPolicy,
    CircuitOpen,
    Outcome,
    SlidingWindowBreaker,
    State,
)

POLICY = BreakerPolicy(
    failure_ratio=0.5, window_calls=10, window_seconds=60, min_calls=4, open_seconds=30, probes=2
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(policy: BreakerPolicy = POLICY) -> tuple[SlidingWindowBreaker, Clock, list]:
    clock, changes = Clock(), []
    made = SlidingWindowBreaker(
        "psp", policy, on_change=lambda _, old, new: changes.append((old, new)), clock=clock
    )
    return made, clock, changes


def calls(made: SlidingWindowBreaker, operation: str, *outcomes: Outcome) -> None:
    for outcome in outcomes:
        made.record(made.permit(), operation, outcome)


F, S, N = Outcome.FAILURE, Outcome.SUCCESS, Outcome.IGNORED  # N: not judged


def test_fewer_calls_than_the_minimum_never_open_it_even_all_failed():
    made, _, _ = breaker()
    calls(made, "authorize", F, F, F)
    assert made.state is State.CLOSED


def test_it_opens_at_the_failure_ratio_not_on_consecutive_failures():
    made, _, changes = breaker()
    calls(made, "authorize", F, S, F, S)  # 2 of 4: the ratio, though never twice in a row
    assert made.state is State.OPEN
    assert changes == [(State.CLOSED, State.OPEN)]
    with pytest.raises(CircuitOpen):
        made.permit()


def test_a_healthy_ratio_stays_closed_on_a_normal_day():
    made, _, changes = breaker()
    calls(made, "authorize", *([S, S, F] * 20))  # a third failing: below half
    assert made.state is State.CLOSED
    assert changes == []


def test_declines_and_ignored_outcomes_do_not_count_as_calls():
    made, _, _ = breaker()
    calls(made, "authorize", N, N, N, N, N, F, F, F)
    assert made.state is State.CLOSED  # 3 judged calls < min 4


def test_the_window_keeps_only_the_last_n_calls():
    made, _, _ = breaker()
    calls(made, "authorize", *([S] * 10), F, F, F, F)
    assert made.state is State.CLOSED  # 4 of the last 10
    calls(made, "authorize", F)
    assert made.state is State.OPEN  # 5 of the last 10 (of all 15 calls: a third)


def test_calls_older_than_the_window_seconds_are_forgotten():
    made, clock, _ = breaker()
    calls(made, "authorize", F, F, F)
    clock.now += 61
    calls(made, "authorize", F, S, S)
    assert made.state is State.CLOSED  # 1 of 3 young ones


def test_each_operation_is_judged_on_its_own():
    made, _, _ = breaker()
    for _ in range(3):
        calls(made, "capture", *([S] * 10))
        calls(made, "authorize", F)
        made.observe("card", S)
    assert made.state is State.CLOSED  # 3 authorizations: not yet the minimum
    calls(made, "authorize", F)
    assert made.state is State.OPEN


def test_after_the_cool_down_probes_close_it_when_they_all_succeed():
    made, clock, changes = breaker()
    calls(made, "authorize", F, F, F, F)
    clock.now += 29
    assert made.state is State.OPEN
    clock.now += 1
    assert made.state is State.HALF_OPEN
    first, second = made.permit(), made.permit()
    with pytest.raises(CircuitOpen):
        made.permit()  # only `probes` calls at a time
    made.record(first, "authorize", S)
    assert made.state is State.HALF_OPEN
    made.record(second, "capture", S)
    assert made.state is State.CLOSED
    assert changes[-2:] == [(State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]
    calls(made, "authorize", F, F, F)
    assert made.state is State.CLOSED  # a fresh window


def test_a_failed_probe_opens_it_again_for_a_whole_cool_down():
    made, clock, _ = breaker()
    calls(made, "authorize", F, F, F, F)
    clock.now += 30
    calls(made, "authorize", F)
    assert made.state is State.OPEN
    clock.now += 29
    assert made.state is State.OPEN


def test_an_ignored_probe_gives_its_place_back_and_ungated_steps_take_none():
    made, clock, _ = breaker()
    calls(made, "authorize", F, F, F, F)
    clock.now += 30
    made.permit(probe=False)  # the card lookup before a probe
    calls(made, "authorize", N, N, N)
    calls(made, "authorize", S, S)
    assert made.state is State.CLOSED


def test_an_answer_to_a_call_permitted_before_a_state_change_is_not_counted():
    made, clock, _ = breaker()
    late = made.permit()
    calls(made, "authorize", F, F, F, F)
    clock.now += 30
    assert made.state is State.HALF_OPEN
    made.record(late, "authorize", S)
    made.record(late, "authorize", S)
    assert made.state is State.HALF_OPEN


def test_a_card_failure_seen_elsewhere_reopens_a_half_open_breaker():
    made, clock, _ = breaker()
    calls(made, "authorize", F, F, F, F)
    clock.now += 30
    made.observe("card", F)
    assert made.state is State.OPEN


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_ratio": 0},
        {"failure_ratio": 1.5},
        {"min_calls": 0},
        {"min_calls": 30},
        {"open_seconds": 0},
        {"probes": 0},
    ],
)
def test_a_policy_that_cannot_work_is_refused(bad):
    with pytest.raises(ValueError):
        BreakerPolicy(**{**POLICY.__dict__, **bad})
