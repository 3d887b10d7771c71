"""The runner's decisions on the in-memory job store (held to the PostgreSQL store's contract
by tests/support/job_store_contract.py), with a charger standing in for the gateway: what an
attempt charges, under which key, and what its outcome makes of the job and the
subscription when the merchant changed it meanwhile or another worker took the job."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from rebill_svc.charging import ChargeRequest, ChargeResult
from rebill_svc.domain.dunning import Outcome
from rebill_svc.domain.jobs import JobStatus
from rebill_svc.domain.subscriptions import Status
from rebill_svc.jobs.memory import InMemoryJobStore, StoredSubscription
from rebill_svc.metrics import JOBS_FAILED
from rebill_svc.runner import JobRunner, Leases

MERCHANT = "acct_runner"


class Charger:
    """Answers every charge with `outcome` (after `meanwhile` ran: what happens while the
    charge is at the PSP) and remembers what it was asked."""

    def __init__(self, outcome: Outcome = Outcome.SUCCEEDED, meanwhile=None):
        self.asked: list[ChargeRequest] = []
        self._outcome = outcome
        self._meanwhile = meanwhile

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.asked.append(request)
        if self._meanwhile is not None:
            await self._meanwhile()
        return ChargeResult(self._outcome, payment_intent=f"pi_{len(self.asked)}")


def due_job(store: InMemoryJobStore, late_days: int = 0) -> str:
    """A monthly subscription whose period ended `late_days` ago, its next period scheduled;
    the job's id."""
    start = store.now - timedelta(days=31 + late_days)
    store.add_subscription(
        StoredSubscription(
            id="sub_runner",
            merchant_id=MERCHANT,
            status=Status.ACTIVE,
            current_period_start=start,
            current_period_end=start + timedelta(days=31),
        )
    )
    assert asyncio.run(store.schedule_due(10)) == 1
    [job] = store.jobs_of("sub_runner")
    return job.id


def runner(store: InMemoryJobStore, charger: Charger, owner: str = "worker") -> JobRunner:
    return JobRunner(store, charger, owner, Leases(lease_seconds=30, recheck_seconds=10))


def events(store: InMemoryJobStore) -> list[tuple[str, str]]:
    return [(e.kind, e.object_id) for e in store.events]


def test_a_paid_attempt_settles_the_job_and_keeps_the_subscription_active():
    store = InMemoryJobStore()
    job = due_job(store)
    charger = Charger()

    assert asyncio.run(runner(store, charger).run(job))
    assert [(r.amount, r.attempt, r.payment_method) for r in charger.asked] == [
        (4200, 1, "pm_twin")
    ]
    assert store.jobs[job].status == JobStatus.SUCCEEDED
    assert events(store) == [("rebill.succeeded", job), ("subscription.updated", "sub_runner")]
    assert not asyncio.run(runner(store, charger).run(job))  # settled: not run again
    assert len(charger.asked) == 1


def test_an_attempt_never_started_is_not_charged_once_the_subscription_ended():
    """A period whose attempt no worker started is not charged after a cancel (or a pause,
    or dunning's end): settled failed, no attempt row."""
    for ended in (Status.CANCELED, Status.PAUSED, Status.UNPAID):
        store = InMemoryJobStore()
        job = due_job(store)
        store.subscriptions["sub_runner"].status = ended
        charger = Charger()

        assert asyncio.run(runner(store, charger).run(job))
        assert charger.asked == []
        assert store.jobs[job].status == JobStatus.FAILED
        assert store.attempts == {}
        assert store.subscriptions["sub_runner"].status == ended
        assert events(store) == [("rebill.failed", job)]


def test_an_attempt_that_may_have_charged_is_finished_under_its_key_after_the_subscription_ends():
    """A worker claimed the attempt (it may have charged at the PSP) and died; the merchant
    then canceled or paused. The re-run asks the gateway under the same key and records what
    it says."""
    for ended in (Status.CANCELED, Status.PAUSED):
        store = InMemoryJobStore()
        job = due_job(store)
        assert asyncio.run(store.claim(job, "worker-dead", 0.3)) is not None
        store.subscriptions["sub_runner"].status = ended
        store.pass_time(1)
        assert asyncio.run(store.reclaim_stale(10, requeue_after=300)) == 1
        charger = Charger()

        assert asyncio.run(runner(store, charger, "worker-new").run(job))
        assert len(charger.asked) == 1, "the re-run did not ask the gateway"
        [(key, attempt)] = store.attempts.items()
        assert key == (job, 1)
        assert (attempt.outcome, attempt.idempotency_key) == (
            Outcome.SUCCEEDED,
            charger.asked[0].idempotency_key,
        )
        assert store.jobs[job].status == JobStatus.SUCCEEDED
        assert store.subscriptions["sub_runner"].status == ended  # a payment does not undo it


def test_a_cancel_that_lands_while_the_charge_is_at_the_psp_is_not_undone_by_its_outcome():
    """The settle decided on `active` is refused (the status changed under it); the runner
    decides again on `canceled`: the period is paid, the subscription stays canceled, and no
    subscription event says otherwise."""
    store = InMemoryJobStore()
    job = due_job(store)

    async def cancel():
        store.subscriptions["sub_runner"].status = Status.CANCELED

    assert asyncio.run(runner(store, Charger(meanwhile=cancel)).run(job))
    assert store.jobs[job].status == JobStatus.SUCCEEDED
    assert store.subscriptions["sub_runner"].status == Status.CANCELED
    assert events(store) == [("rebill.succeeded", job)]


def test_a_dunning_decline_that_lands_after_a_cancel_schedules_no_retry():
    store = InMemoryJobStore()
    job = due_job(store)

    async def cancel():
        store.subscriptions["sub_runner"].status = Status.CANCELED

    asyncio.run(runner(store, Charger(Outcome.DECLINED_SOFT, meanwhile=cancel)).run(job))
    assert (store.jobs[job].status, store.jobs[job].attempt) == (JobStatus.FAILED, 1)
    assert store.subscriptions["sub_runner"].status == Status.CANCELED
    assert store.subscriptions["sub_runner"].next_attempt_at is None


def test_a_worker_that_lost_its_lease_during_the_charge_records_nothing():
    """Its lease lapsed and another worker took the job: the late outcome is not recorded
    (the other worker finishes the attempt under the same key)."""
    store = InMemoryJobStore()
    job = due_job(store)

    async def lose_the_lease():
        store.pass_time(60)
        assert await store.claim(job, "worker-other", 30) is not None

    lost = JOBS_FAILED.labels("lease_lost")._value.get()
    assert asyncio.run(runner(store, Charger(meanwhile=lose_the_lease), "worker-slow").run(job))
    assert JOBS_FAILED.labels("lease_lost")._value.get() == lost + 1
    assert store.attempts == {}
    assert (store.jobs[job].status, store.jobs[job].lease_owner) == (
        JobStatus.RUNNING,
        "worker-other",
    )
    assert events(store) == []


def test_a_declined_periods_retry_is_timed_from_its_first_attempt_not_from_its_start():
    """The scheduler was down for three days; the period's soft decline is retried a day
    after its first attempt (±10 %), not a day after the period's start (which would be due
    at once)."""
    store = InMemoryJobStore()
    job = due_job(store, late_days=3)

    asyncio.run(runner(store, Charger(Outcome.DECLINED_SOFT)).run(job))
    stored = store.jobs[job]
    first_attempt_at = store.attempts[(job, 1)].at
    assert (stored.status, stored.attempt) == (JobStatus.SCHEDULED, 2)
    assert timedelta(hours=21) <= stored.due_at - first_attempt_at <= timedelta(hours=27)
    subscription = store.subscriptions["sub_runner"]
    assert (subscription.status, subscription.next_attempt_at) == (Status.PAST_DUE, stored.due_at)
    assert events(store) == [("subscription.past_due", "sub_runner")]


def test_a_retry_that_comes_due_runs_the_next_attempt_under_its_own_key_and_pays():
    store = InMemoryJobStore()
    job = due_job(store)
    charger = Charger(Outcome.DECLINED_SOFT)
    asyncio.run(runner(store, charger).run(job))

    store.pass_time(timedelta(days=2).total_seconds())
    assert asyncio.run(store.queue_due_retries(10)) == 1
    paid = Charger()
    asyncio.run(runner(store, paid).run(job))
    assert [r.attempt for r in paid.asked] == [2]
    assert paid.asked[0].idempotency_key != charger.asked[0].idempotency_key
    assert store.jobs[job].status == JobStatus.SUCCEEDED
    assert store.subscriptions["sub_runner"].status == Status.ACTIVE


def test_an_unknown_outcome_keeps_the_job_running_and_its_recheck_asks_under_the_same_key():
    store = InMemoryJobStore()
    job = due_job(store)
    unknown = Charger(Outcome.UNKNOWN)
    asyncio.run(runner(store, unknown).run(job))
    assert (store.jobs[job].status, store.jobs[job].lease_owner) == (JobStatus.RUNNING, None)
    assert events(store) == []

    store.pass_time(11)  # the recheck is due
    assert asyncio.run(store.reclaim_stale(10, requeue_after=300)) == 1
    known = Charger()
    asyncio.run(runner(store, known, "worker-2").run(job))
    assert known.asked[0].idempotency_key == unknown.asked[0].idempotency_key
    assert store.attempts[(job, 1)].outcome == Outcome.SUCCEEDED
    assert store.jobs[job].status == JobStatus.SUCCEEDED


def test_an_attempt_that_needs_the_customer_is_settled_and_not_retried():
    store = InMemoryJobStore()
    job = due_job(store)
    asyncio.run(runner(store, Charger(Outcome.ACTION_REQUIRED)).run(job))
    assert store.jobs[job].status == JobStatus.REQUIRES_ACTION
    assert store.subscriptions["sub_runner"].status == Status.ACTIVE
    assert events(store) == [("rebill.action_required", job)]
    store.pass_time(timedelta(days=10).total_seconds())
    assert asyncio.run(store.queue_due_retries(10)) == 0
    assert asyncio.run(store.reclaim_stale(10, requeue_after=300)) == 0


def test_a_renewal_in_flight_does_not_undo_a_cancel_or_a_pause_and_nothing_after_is_charged():
    """The merchant cancels or pauses while the period's charge is at the PSP: the charge
    started before the call finishes and is recorded (the period is paid), the subscription
    stays as the merchant left it, and months later no period after it is scheduled or
    charged. (tests/integration/test_rebill_ends_in_flight.py does the same through REST,
    a real worker and a slow sandbox.)"""
    for ended in (Status.CANCELED, Status.PAUSED):
        store = InMemoryJobStore()
        job = due_job(store)

        async def end(store=store, status=ended):
            store.subscriptions["sub_runner"].status = status

        charger = Charger(meanwhile=end)
        assert asyncio.run(runner(store, charger).run(job))
        assert store.jobs[job].status == JobStatus.SUCCEEDED
        assert store.attempts[(job, 1)].outcome == Outcome.SUCCEEDED
        assert store.subscriptions["sub_runner"].status == ended

        store.pass_time(timedelta(days=130).total_seconds())
        assert asyncio.run(store.schedule_due(10)) == 0
        assert asyncio.run(store.queue_due_retries(10)) == 0
        assert asyncio.run(store.reclaim_stale(10, requeue_after=300)) == 0
        assert [j.id for j in store.jobs_of("sub_runner")] == [job]
        assert len(charger.asked) == 1
        assert store.subscriptions["sub_runner"].status == ended


def test_a_dunning_retry_in_flight_does_not_undo_a_cancel_nor_retry_again():
    """The period's first attempt was declined; its retry is at the PSP when the merchant
    cancels, and is declined too: the job ends failed at attempt 2, the subscription stays
    canceled, and no third attempt nor later period ever comes due."""
    store = InMemoryJobStore()
    job = due_job(store)
    declined = Charger(Outcome.DECLINED_SOFT)
    asyncio.run(runner(store, declined).run(job))
    assert store.subscriptions["sub_runner"].status == Status.PAST_DUE

    store.pass_time(timedelta(days=2).total_seconds())
    assert asyncio.run(store.queue_due_retries(10)) == 1

    async def cancel():
        store.subscriptions["sub_runner"].status = Status.CANCELED

    retried = Charger(Outcome.DECLINED_SOFT, meanwhile=cancel)
    assert asyncio.run(runner(store, retried).run(job))
    assert [r.attempt for r in declined.asked + retried.asked] == [1, 2]
    assert (store.jobs[job].status, store.jobs[job].attempt) == (JobStatus.FAILED, 2)
    assert sorted((n, a.outcome) for (_, n), a in store.attempts.items()) == [
        (1, Outcome.DECLINED_SOFT),
        (2, Outcome.DECLINED_SOFT),
    ]
    subscription = store.subscriptions["sub_runner"]
    assert (subscription.status, subscription.next_attempt_at) == (Status.CANCELED, None)

    store.pass_time(timedelta(days=70).total_seconds())
    assert asyncio.run(store.queue_due_retries(10)) == 0
    assert asyncio.run(store.schedule_due(10)) == 0
    assert [j.id for j in store.jobs_of("sub_runner")] == [job]
