"""A rebill job run again after its worker died: the job store and runner on the real
PostgreSQL, with a charger that stands in for the gateway (what the gateway does with a
repeated key is tested in test_payments and test_rebill_faults). An attempt that may have
reached the PSP is finished under its own key whatever happened to the subscription since,
so a period the customer paid for is never recorded as not charged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Merchant
from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.problems import FailedPrecondition
from rebill_svc.charging import ChargeRequest, ChargeResult
from rebill_svc.dead_letters import DeadLetters
from rebill_svc.domain.dunning import Outcome
from rebill_svc.jobs import JobStore
from rebill_svc.repository import SubscriptionRepository
from rebill_svc.runner import JobRunner, Leases
from tests.support.mesh import migrated_database

pytestmark = pytest.mark.integration

MERCHANT = Merchant("acct_reruns", False)
LEASE = 0.3


@pytest.fixture()
def infra():
    with migrated_database("paymesh_rebill_reruns") as infra:
        yield infra


class RecordingCharger:
    """Answers every charge with `outcome` and remembers what it was asked."""

    def __init__(self, outcome: Outcome = Outcome.SUCCEEDED):
        self.asked: list[ChargeRequest] = []
        self._outcome = outcome

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.asked.append(request)
        return ChargeResult(self._outcome, payment_intent=f"pi_{len(self.asked)}")


def add_due_subscription(database_url: str, subscription_id: str, late_days: int = 0) -> None:
    """A monthly subscription whose current period ended just now, or `late_days` ago."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=31 + late_days)
    with psycopg.connect(database_url) as db:
        db.execute(
            """
            INSERT INTO rebill.subscriptions (id, merchant_id, livemode, payment_method, amount,
              currency, interval, interval_count, billing_cycle_anchor, status, period_number,
              current_period_start, current_period_end)
            VALUES (%s, %s, false, 'pm_reruns', 4200, 'usd', 'month', 1, %s, 'active', 0, %s,
              %s + interval '1 month')
            """,
            (subscription_id, MERCHANT.id, start, start, start),
        )


def job_and_attempts(database_url: str, job_id: str) -> tuple[str, list[tuple]]:
    with psycopg.connect(database_url) as db:
        status = db.execute("SELECT status FROM rebill.rebill_jobs WHERE id = %s", (job_id,))
        attempts = db.execute(
            "SELECT attempt, outcome, idempotency_key FROM rebill.rebill_attempts"
            " WHERE job_id = %s ORDER BY attempt",
            (job_id,),
        ).fetchall()
        return status.fetchone()[0], attempts


@dataclass(frozen=True)
class Scheduled:
    engine: AsyncEngine
    store: JobStore
    job_id: str


@contextlib.asynccontextmanager
async def scheduled_job(database_url: str) -> AsyncIterator[Scheduled]:
    """A job store on the test's database, once it scheduled the one due period."""
    engine = create_engine(database_url, 2)
    direct = DirectSql(engine, 2)
    try:
        store = JobStore(engine, direct)
        assert await store.schedule_due(10) == 1
        with psycopg.connect(database_url) as db:
            (job_id,) = [row[0] for row in db.execute("SELECT id FROM rebill.rebill_jobs")]
        yield Scheduled(engine, store, job_id)
    finally:
        await direct.close()
        await engine.dispose()


async def run_once(scheduled: Scheduled, charger: RecordingCharger, owner: str = "worker") -> None:
    runner = JobRunner(scheduled.store, charger, owner, Leases(lease_seconds=5))
    assert await runner.run(scheduled.job_id)


def add_dead_letter(database_url: str, letter_id: str, job_id: str) -> None:
    with psycopg.connect(database_url) as db:
        db.execute(
            "INSERT INTO rebill.dead_letters (id, queue, job_id, reason, body)"
            " VALUES (%s, 'rebill.monthly', %s, 'delivery_limit', '{}')",
            (letter_id, job_id),
        )


async def run_after_a_death(database_url: str, end_subscription) -> tuple[str, list, list]:
    """Schedules the subscription's due period, lets a worker claim it and die before its
    settle, ends the subscription through `end_subscription`, and runs the job again once
    the dead worker's lease has lapsed. Returns the job's status, its attempts and what the
    second run asked the gateway."""
    async with scheduled_job(database_url) as scheduled:
        store = scheduled.store
        # The first worker's claim; it dies in its charge, so nothing is settled.
        assert await store.claim(scheduled.job_id, "worker-dead", LEASE) is not None
        await end_subscription(SubscriptionRepository(scheduled.engine, store))
        await asyncio.sleep(LEASE + 0.2)
        assert await store.reclaim_stale(10, requeue_after=300) == 1
        charger = RecordingCharger()
        await run_once(scheduled, charger, "worker-new")
        status, attempts = job_and_attempts(database_url, scheduled.job_id)
        return status, attempts, charger.asked


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda subs: subs.cancel(MERCHANT, "sub_rerun", False), id="canceled"),
        pytest.param(lambda subs: subs.pause(MERCHANT, "sub_rerun"), id="paused"),
    ],
)
def test_an_attempt_that_may_have_charged_is_finished_after_the_subscription_ends(infra, end):
    """A worker claimed the period's attempt (it may have charged at the PSP) and died; the
    merchant then canceled or paused. The re-run must ask the gateway under the same key and
    record what it says: before, it saw no attempt row, skipped the charge and recorded the
    period as not charged although the customer may have paid."""
    add_due_subscription(infra.database_url, "sub_rerun")
    status, attempts, asked = asyncio.run(run_after_a_death(infra.database_url, end))
    assert len(asked) == 1, "the re-run did not ask the gateway"
    assert asked[0].idempotency_key == attempts[0][2]
    assert [(attempt, outcome) for attempt, outcome, _ in attempts] == [(1, "succeeded")]
    assert status == "succeeded"


def test_an_attempt_never_claimed_is_not_charged_once_the_subscription_is_canceled(infra):
    """The other side of the rule: a period whose attempt no worker has started is not
    charged after a cancel."""
    add_due_subscription(infra.database_url, "sub_unclaimed")

    async def scenario() -> tuple[str, list, list]:
        async with scheduled_job(infra.database_url) as scheduled:
            subscriptions = SubscriptionRepository(scheduled.engine, scheduled.store)
            await subscriptions.cancel(MERCHANT, "sub_unclaimed", False)
            charger = RecordingCharger()
            await run_once(scheduled, charger)
            return (*job_and_attempts(infra.database_url, scheduled.job_id), charger.asked)

    status, attempts, asked = asyncio.run(scenario())
    assert asked == []
    assert attempts == []
    assert status == "failed"


def test_a_dead_letter_whose_job_attempt_started_cannot_be_discarded(infra):
    """Discarding a letter drops its job only while no attempt of it started; once one has
    (it may have charged), the discard is refused and changes nothing, and a retry of the
    letter is what finishes the attempt."""
    add_due_subscription(infra.database_url, "sub_dead")

    async def scenario() -> tuple[str, list]:
        async with scheduled_job(infra.database_url) as scheduled:
            job_id = scheduled.job_id
            assert await scheduled.store.claim(job_id, "worker-dead", LEASE) is not None
            add_dead_letter(infra.database_url, "dl_started", job_id)
            letters = DeadLetters(scheduled.engine)
            with pytest.raises(FailedPrecondition) as refused:
                await letters.discard("dl_started")
            assert refused.value.reason == "attempt_started"
            (letter,) = await letters.list("dead", 10)
            assert letter.id == "dl_started"
            return job_and_attempts(infra.database_url, job_id)

    status, attempts = asyncio.run(scenario())
    assert (status, attempts) == ("running", [])


def test_a_declined_periods_retry_is_timed_from_its_first_attempt_not_from_its_start(infra):
    """The scheduler was down for three days: a period that started then is first attempted
    now. Its soft decline is retried a day after that attempt (±10 % jitter), as the README
    says; before, the retry was timed from the period's start, so it was due at once and the
    whole schedule ran in a few rounds."""
    add_due_subscription(infra.database_url, "sub_late", late_days=3)

    async def scenario() -> tuple[datetime, datetime]:
        async with scheduled_job(infra.database_url) as scheduled:
            await run_once(scheduled, RecordingCharger(Outcome.DECLINED_SOFT))
            with psycopg.connect(infra.database_url) as db:
                return db.execute(
                    "SELECT j.due_at, a.at FROM rebill.rebill_jobs j JOIN rebill.rebill_attempts a"
                    " ON a.job_id = j.id AND a.attempt = 1 WHERE j.id = %s AND j.attempt = 2"
                    " AND j.status = 'scheduled'",
                    (scheduled.job_id,),
                ).fetchone()

    retry_at, first_attempt_at = asyncio.run(scenario())
    assert timedelta(hours=21) <= retry_at - first_attempt_at <= timedelta(hours=27)


def test_discarding_a_dunning_retrys_letter_gives_the_period_up_as_the_policy_says(infra):
    """A declined period's retry is queued and its message dies. Discarding the letter drops
    the retry, so the period cannot be collected any more: the subscription ends as the
    merchant's policy says when dunning gives up (`unpaid` by default), instead of staying
    `past_due` with nothing left to retry it."""
    add_due_subscription(infra.database_url, "sub_dunning")

    async def scenario() -> str:
        async with scheduled_job(infra.database_url) as scheduled:
            job_id = scheduled.job_id
            charger = RecordingCharger(Outcome.DECLINED_SOFT)
            await run_once(scheduled, charger)
            with psycopg.connect(infra.database_url) as db:
                db.execute(
                    "UPDATE rebill.rebill_jobs SET due_at = now() - interval '1 second'"
                    " WHERE id = %s",
                    (job_id,),
                )
            assert await scheduled.store.queue_due_retries(10) == 1
            add_dead_letter(infra.database_url, "dl_dunning", job_id)
            discarded = await DeadLetters(scheduled.engine).discard("dl_dunning")
            assert discarded.status == "discarded"
            assert len(charger.asked) == 1
            return job_id

    job_id = asyncio.run(scenario())
    with psycopg.connect(infra.database_url) as db:
        job = db.execute(
            "SELECT status, attempt FROM rebill.rebill_jobs WHERE id = %s", (job_id,)
        ).fetchone()
        subscription = db.execute(
            "SELECT status, next_attempt_at FROM rebill.subscriptions WHERE id = 'sub_dunning'"
        ).fetchone()
        audited = db.execute(
            "SELECT action, result FROM rebill.rebill_audit WHERE object_id IN (%s, 'sub_dunning')"
            " AND actor = 'ops' ORDER BY id",
            (job_id,),
        ).fetchall()
    assert job == ("failed", 2)
    assert subscription == ("unpaid", None)
    assert audited == [("dead_letter.discard", "failed"), ("subscription.status", "unpaid")]
