"""Dead letters of rebill jobs on the real PostgreSQL, with a charger that stands in for the
gateway: a letter whose job's attempt started (it may have charged) cannot be discarded, and
discarding a dunning retry's letter gives the period up as the merchant's policy says. (The
runner's re-runs after a worker's death are unit tests on the job store's twin:
tests/unit/test_rebill_runner.py.)"""

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
from rebill_svc.jobs.postgres import PostgresJobStore
from rebill_svc.runner import JobRunner, Leases
from tests.conftest import migrated_infra

pytestmark = pytest.mark.integration

MERCHANT = Merchant("acct_reruns", False)
LEASE = 0.3


@pytest.fixture()
def infra():
    with migrated_infra("paymesh_rebill_reruns") as infra:
        yield infra


class RecordingCharger:
    """Answers every charge with `outcome` and remembers what it was asked."""

    def __init__(self, outcome: Outcome = Outcome.SUCCEEDED):
        self.asked: list[ChargeRequest] = []
        self._outcome = outcome

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.asked.append(request)
        return ChargeResult(self._outcome, payment_intent=f"pi_{len(self.asked)}")


def add_due_subscription(database_url: str, subscription_id: str) -> None:
    """A monthly subscription whose current period ended just now."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=31)
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
    store: PostgresJobStore
    job_id: str


@contextlib.asynccontextmanager
async def scheduled_job(database_url: str) -> AsyncIterator[Scheduled]:
    """A job store on the test's database, once it scheduled the one due period."""
    engine = create_engine(database_url, 2)
    direct = DirectSql(engine, 2)
    try:
        store = PostgresJobStore(engine, direct)
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
