"""A rebill job's transition table (rebill_svc.domain.jobs), the SQL written from it, and the
dead-letter decisions taken from it."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from rebill_svc.domain.dunning import (
    AwaitCustomer,
    FinalStatus,
    GiveUp,
    Outcome,
    Paid,
    RetryAt,
    WaitForOutcome,
)
from rebill_svc.domain.jobs import (
    JOB_EVENTS,
    SETTLED,
    TRANSITIONS,
    UNSETTLED,
    AttemptStarted,
    JobAction,
    JobStatus,
    discard_plan,
    move,
    republished_on_retry,
    settle_action,
    sources,
)
from rebill_svc.domain.subscriptions import Status, after_attempt
from rebill_svc.domain.updates import open_period_attempt
from rebill_svc.jobs import statements

STEPS = (
    Paid(),
    WaitForOutcome(),
    AwaitCustomer(),
    RetryAt(2, datetime(2030, 1, 2, tzinfo=UTC)),
    GiveUp(FinalStatus.UNPAID),
    GiveUp(FinalStatus.CANCELED),
)


def test_every_status_is_unsettled_or_settled_and_only_a_new_card_reopens_a_settled_one():
    assert set(UNSETTLED) | set(SETTLED) == set(JobStatus)
    assert not set(UNSETTLED) & set(SETTLED)
    reopening = {
        (action, source)
        for action, moves in TRANSITIONS.items()
        for source, target in moves.items()
        if source in SETTLED and target in UNSETTLED
    }
    assert reopening == {(JobAction.RUN_NOW, JobStatus.FAILED)}
    assert set(JOB_EVENTS) == set(SETTLED)


@pytest.mark.parametrize("subscription_status", list(Status))
@pytest.mark.parametrize("step", STEPS, ids=lambda step: type(step).__name__)
def test_every_outcome_a_worker_settles_is_a_move_from_running(step, subscription_status):
    after = after_attempt(step, subscription_status)
    action = settle_action(after.job_status)
    assert sources(action) == (JobStatus.RUNNING,)
    assert move(JobStatus.RUNNING, action) == after.job_status


def test_a_dead_letters_discard_drops_only_a_job_that_waits_with_an_attempt_nobody_started():
    assert discard_plan(JobStatus.QUEUED, attempt_runs=0) == JobAction.DISCARD
    assert move(JobStatus.QUEUED, JobAction.DISCARD) == JobStatus.FAILED
    for started in ((JobStatus.RUNNING, 1), (JobStatus.RUNNING, 0), (JobStatus.QUEUED, 1)):
        with pytest.raises(AttemptStarted):
            discard_plan(*started)
    for left_as_it_is in (JobStatus.SCHEDULED, *SETTLED):
        assert discard_plan(left_as_it_is, attempt_runs=1) is None


def test_a_dead_letters_retry_publishes_only_a_job_that_waits_for_or_is_held_by_a_worker():
    assert {s for s in JobStatus if republished_on_retry(s)} == {
        JobStatus.QUEUED,
        JobStatus.RUNNING,
    }


def test_a_new_card_runs_the_open_periods_attempt_only_where_the_table_allows():
    runs = {status: open_period_attempt(status, attempt=2, attempt_runs=0) for status in JobStatus}
    assert runs == {
        JobStatus.SCHEDULED: 2,
        JobStatus.QUEUED: 2,
        JobStatus.FAILED: 3,  # a given-up period gets a new attempt
        JobStatus.RUNNING: None,
        JobStatus.SUCCEEDED: None,
        JobStatus.REQUIRES_ACTION: None,
    }
    assert open_period_attempt(JobStatus.QUEUED, attempt=2, attempt_runs=1) is None


def test_the_sql_conditions_are_written_from_the_table():
    claim = statements.condition(JobAction.CLAIM, only_if={JobStatus.RUNNING: "lapsed"})
    assert claim == "(status = 'queued' OR (status = 'running' AND lapsed))"
    assert statements.condition(JobAction.RETRY_DUE, "j.status") == "(j.status = 'scheduled')"
    with pytest.raises(ValueError, match="does not start from"):
        statements.condition(JobAction.RETRY_DUE, only_if={JobStatus.QUEUED: "x"})
    with pytest.raises(ValueError, match="not a plain word"):
        statements.constant_sql("x'; DROP TABLE y; --")


def test_every_status_the_statements_name_comes_from_an_enum():
    """No bare status in the SQL: every quoted word is an enum's value or one of the few
    names the statements write (aggregate types, audit actions, the snapshot key)."""
    written = set()
    for name in ("DUE", "DUE_AMONG", "ADVANCE", "RETRIES_DUE", "STALE", "SETTLE", "CLAIM"):
        written |= set(re.findall(r"'([^']*)'", getattr(statements, name).text))
    enums = {*JobStatus, *Status, *Outcome}
    names = {
        "",
        "job_id",
        "rebill.attempt",
        "rebill_job",
        "snapshot",
        "subscription",
        "subscription.status",
    }
    assert written - enums <= names
