"""A rebill job's statuses, and the one table of legal moves between them.

    scheduled ──(due on its clock)──▶ queued ──(a worker's lease)──▶ running ──▶ succeeded
        ▲                               ▲                              │    ├──▶ failed
        └────── declined: next attempt ─┼──────────────────────────────┘    └──▶ requires_action
                                        └── lease expired (dead worker, unknown outcome)

Every change of a job's status asks `sources()` (in a conditional UPDATE's WHERE, see
rebill_svc.jobs.sql) or `move()` (in Python, the in-memory twin) so that no other place
writes down which move is legal."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    SCHEDULED = "scheduled"  # a declined period's next attempt, waiting for its time
    QUEUED = "queued"  # its message is out: waiting for a worker
    RUNNING = "running"  # leased to a worker, or its outcome is unknown (rechecked)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # given up, or never attempted (the subscription ended first)
    # The PSP waits for the customer's authentication (3-D Secure): the merchant is told
    # (rebill.action_required). Settled like succeeded and failed: the period is not retried.
    REQUIRES_ACTION = "requires_action"


class JobAction(StrEnum):
    RETRY_DUE = "retry_due"  # a declined period's next attempt came due on its clock
    CLAIM = "claim"  # a worker takes the lease (a lapsed one too)
    RECLAIM = "reclaim"  # the sweep: a lapsed lease, or a message lost with its queue
    # A worker's settle, by what the attempt's outcome makes of the job:
    PAID = "paid"
    RETRY_LATER = "retry_later"  # declined: the next attempt is scheduled
    GIVE_UP = "give_up"  # declined for the last time, or not attempted
    AWAIT_CUSTOMER = "await_customer"
    RECHECK = "recheck"  # the outcome is unknown: asked about again under the same lease
    # An operator drops a dead letter's job that waits for a worker (not started).
    DISCARD = "discard"
    # A cancel drops a declined period's waiting retry.
    DROP_RETRY = "drop_retry"
    # A merchant's new card runs the open period's attempt now (leased to the call).
    RUN_NOW = "run_now"


J = JobStatus

# Created as: queued (the scheduler's renewals), running (a first period, leased to its
# creation).
UNSETTLED = (J.SCHEDULED, J.QUEUED, J.RUNNING)
SETTLED = (J.SUCCEEDED, J.FAILED, J.REQUIRES_ACTION)

TRANSITIONS: dict[JobAction, dict[JobStatus, JobStatus]] = {
    JobAction.RETRY_DUE: {J.SCHEDULED: J.QUEUED},
    # running: only once its lease expired (the statements add the condition)
    JobAction.CLAIM: {J.QUEUED: J.RUNNING, J.RUNNING: J.RUNNING},
    # running: once its lease expired; queued: once queued too long
    JobAction.RECLAIM: {J.RUNNING: J.QUEUED, J.QUEUED: J.QUEUED},
    JobAction.PAID: {J.RUNNING: J.SUCCEEDED},
    JobAction.RETRY_LATER: {J.RUNNING: J.SCHEDULED},
    JobAction.GIVE_UP: {J.RUNNING: J.FAILED},
    JobAction.AWAIT_CUSTOMER: {J.RUNNING: J.REQUIRES_ACTION},
    JobAction.RECHECK: {J.RUNNING: J.RUNNING},
    JobAction.DISCARD: {J.QUEUED: J.FAILED},  # only an attempt nobody started
    JobAction.DROP_RETRY: {J.SCHEDULED: J.FAILED},
    # queued: only an attempt nobody started; failed: a given-up period's new attempt
    JobAction.RUN_NOW: {J.SCHEDULED: J.RUNNING, J.QUEUED: J.RUNNING, J.FAILED: J.RUNNING},
}

# A worker's settle: the action that leaves the job in each status.
SETTLES: dict[JobStatus, JobAction] = {
    J.SUCCEEDED: JobAction.PAID,
    J.SCHEDULED: JobAction.RETRY_LATER,
    J.FAILED: JobAction.GIVE_UP,
    J.REQUIRES_ACTION: JobAction.AWAIT_CUSTOMER,
    J.RUNNING: JobAction.RECHECK,
}

# The event of each status a settle (or a discard) ends a job in.
JOB_EVENTS: dict[JobStatus, str] = {
    J.SUCCEEDED: "rebill.succeeded",
    J.FAILED: "rebill.failed",
    J.REQUIRES_ACTION: "rebill.action_required",
}


def sources(action: JobAction) -> tuple[JobStatus, ...]:
    """The statuses `action` may start from (for a conditional UPDATE's WHERE)."""
    return tuple(TRANSITIONS[action])


def move(status: str, action: JobAction) -> JobStatus | None:
    """The status after `action`, or None when `action` may not start from `status`."""
    return TRANSITIONS[action].get(JobStatus(status))


def settle_action(job_status: JobStatus) -> JobAction:
    return SETTLES[job_status]


class DeadLetterStatus(StrEnum):
    DEAD = "dead"  # waits for an operator
    RETRIED = "retried"
    DISCARDED = "discarded"


def discard_plan(job_status: str, attempt_runs: int) -> JobAction | None:
    """What discarding a dead letter does to its job: DISCARD when it waits for a worker with
    an attempt nobody started; None when it stays as it is (settled, or waiting for its
    retry's time). Raises AttemptStarted when its attempt was started: it may have charged,
    and can only be retried so that it finishes under its key."""
    if job_status == J.RUNNING or (job_status == J.QUEUED and attempt_runs):
        raise AttemptStarted
    return JobAction.DISCARD if move(job_status, JobAction.DISCARD) else None


def republished_on_retry(job_status: str) -> bool:
    """Whether retrying a dead letter publishes its job again: when it waits for a worker, or
    is held by one whose lease will lapse."""
    return job_status in (J.QUEUED, J.RUNNING)


class AttemptStarted(Exception):
    """The job's attempt was started and may have charged."""
