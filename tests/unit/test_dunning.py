"""One dunning policy decides every step after a charge attempt (issue 10): declines retried
on the schedule, never beside an attempt whose outcome is unknown, within one budget that only
an issuer's declines spend (issue 29)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebill_svc.domain.dunning import (
    AwaitCustomer,
    FinalStatus,
    GiveUp,
    Outcome,
    Paid,
    RetryAt,
    RetryPolicy,
    WaitForOutcome,
    idempotency_key,
    next_step,
)

FIRST = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def no_jitter(_fraction: float) -> float:
    return 0.0


def test_a_soft_decline_is_retried_at_plus_1_3_5_7_days_then_given_up():
    policy = RetryPolicy()
    steps = [next_step(policy, n, Outcome.DECLINED_SOFT, FIRST, no_jitter) for n in range(1, 6)]

    assert steps[:4] == [
        RetryAt(2, FIRST + timedelta(days=1)),
        RetryAt(3, FIRST + timedelta(days=3)),
        RetryAt(4, FIRST + timedelta(days=5)),
        RetryAt(5, FIRST + timedelta(days=7)),
    ]
    assert steps[4] == GiveUp(FinalStatus.UNPAID)


@pytest.mark.parametrize("attempt", [1, 3])
def test_a_hard_decline_ends_dunning_with_the_merchants_final_state(attempt):
    policy = RetryPolicy(final_status=FinalStatus.CANCELED)
    step = next_step(policy, attempt, Outcome.DECLINED_HARD, FIRST, no_jitter)
    assert step == GiveUp(FinalStatus.CANCELED)


def test_an_unknown_outcome_starts_nothing_and_a_success_pays_the_period():
    policy = RetryPolicy()
    assert next_step(policy, 2, Outcome.UNKNOWN, FIRST, no_jitter) == WaitForOutcome()
    assert next_step(policy, 2, Outcome.SUCCEEDED, FIRST, no_jitter) == Paid()


@pytest.mark.parametrize("attempt", [1, 5])
def test_a_charge_that_needs_the_customer_waits_for_them_and_never_ends_dunning(attempt):
    # Even the budget's last attempt: asking for 3-D Secure is not a decline.
    policy = RetryPolicy(final_status=FinalStatus.CANCELED)
    assert next_step(policy, attempt, Outcome.ACTION_REQUIRED, FIRST, no_jitter) == (
        AwaitCustomer()
    )


def test_an_attempt_beyond_a_shrunk_budget_still_counts_and_is_the_last():
    # Attempt 4 was already waiting when the merchant cut the policy to two attempts.
    shrunk = RetryPolicy(retry_after=(timedelta(days=1),))
    assert next_step(shrunk, 4, Outcome.SUCCEEDED, FIRST, no_jitter) == Paid()
    assert next_step(shrunk, 4, Outcome.UNKNOWN, FIRST, no_jitter) == WaitForOutcome()
    assert next_step(shrunk, 4, Outcome.DECLINED_SOFT, FIRST, no_jitter) == GiveUp(
        FinalStatus.UNPAID
    )
    with pytest.raises(ValueError):
        next_step(RetryPolicy(), 0, Outcome.DECLINED_SOFT, FIRST, no_jitter)


def test_a_charge_no_psp_could_take_is_retried_on_the_schedule_and_never_spends_the_budget():
    policy = RetryPolicy(retry_after=(timedelta(days=1), timedelta(days=2)), jitter_fraction=0)
    # Three attempts no PSP could take (the card lost everywhere), then two soft declines.
    steps = [
        next_step(policy, 1, Outcome.NOT_CHARGED, FIRST, no_jitter, declined_before=0),
        next_step(policy, 2, Outcome.NOT_CHARGED, FIRST, no_jitter, declined_before=0),
        next_step(policy, 3, Outcome.NOT_CHARGED, FIRST, no_jitter, declined_before=0),
        next_step(policy, 4, Outcome.DECLINED_SOFT, FIRST, no_jitter, declined_before=0),
        next_step(policy, 5, Outcome.DECLINED_SOFT, FIRST, no_jitter, declined_before=1),
        next_step(policy, 6, Outcome.DECLINED_SOFT, FIRST, no_jitter, declined_before=2),
    ]

    assert steps[:5] == [
        RetryAt(2, FIRST + timedelta(days=1)),
        RetryAt(3, FIRST + timedelta(days=2)),
        RetryAt(4, FIRST + timedelta(days=3)),  # past the schedule: its last gap again
        RetryAt(5, FIRST + timedelta(days=4)),
        RetryAt(6, FIRST + timedelta(days=5)),
    ]
    assert steps[5] == GiveUp(FinalStatus.UNPAID)  # the third decline spends the budget
    # Never given up for what no issuer said, however long it lasts.
    assert next_step(policy, 40, Outcome.NOT_CHARGED, FIRST, no_jitter, 2) == RetryAt(
        41, FIRST + timedelta(days=40)
    )
    assert next_step(RetryPolicy(retry_after=()), 1, Outcome.NOT_CHARGED, FIRST, no_jitter, 0) == (
        RetryAt(2, FIRST + timedelta(days=1))
    )


def test_an_attempts_key_does_not_depend_on_the_time_zone_it_is_read_in():
    start = datetime(2026, 3, 1, tzinfo=UTC)
    berlin = start.astimezone(ZoneInfo("Europe/Berlin"))
    assert idempotency_key("sub_1", berlin, 1) == idempotency_key("sub_1", start, 1)
    assert idempotency_key("sub_1", berlin, 1) == "rebill:sub_1:2026-03-01T00:00:00+00:00:1"


def test_each_attempt_has_a_key_of_its_own_and_a_rerun_the_same():
    start = datetime(2026, 3, 1, tzinfo=UTC)
    keys = {idempotency_key("sub_1", start, n) for n in (1, 2, 2)}
    assert keys == {
        "rebill:sub_1:2026-03-01T00:00:00+00:00:1",
        "rebill:sub_1:2026-03-01T00:00:00+00:00:2",
    }


outcomes = st.lists(st.sampled_from(list(Outcome)), min_size=1, max_size=12)
jitters = st.floats(min_value=-1.0, max_value=1.0)


@given(outcomes, st.lists(jitters, min_size=12, max_size=12))
def test_any_run_of_outcomes_stays_within_the_budget_in_order_and_never_beside_an_unknown(
    results, jitter_draws
):
    policy = RetryPolicy()
    attempt, declines, last_at, draws = 1, 0, FIRST, iter(jitter_draws)
    for outcome in results:
        step = next_step(policy, attempt, outcome, FIRST, lambda x: x * next(draws), declines)
        if isinstance(step, WaitForOutcome):
            continue  # the same attempt, asked again later: no new attempt
        if outcome == Outcome.DECLINED_SOFT:
            declines += 1
        if isinstance(step, RetryAt):
            assert outcome in (Outcome.DECLINED_SOFT, Outcome.NOT_CHARGED)
            assert step.attempt == attempt + 1
            assert declines < policy.attempts  # only declines spend the budget
            assert step.at > last_at  # jitter never reorders the schedule
            attempt, last_at = step.attempt, step.at
            continue
        assert isinstance(step, Paid | GiveUp | AwaitCustomer)
        assert outcome != Outcome.NOT_CHARGED  # what no issuer said never ends a period
        break
