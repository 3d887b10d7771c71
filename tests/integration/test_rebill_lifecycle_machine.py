"""A subscription's merchant calls (cancel, pause, resume) interleaved with slow renewals and
clock moves, as a hypothesis state machine over the real scheduler, job store, runner and
repository on PostgreSQL. The charger stands in for the gateway and holds each charge until
the machine lets it answer, so a merchant's call can land while a charge is at the PSP.

What must hold in every interleaving: no charge under a new attempt's key starts after a
cancel or while paused (a re-run of an attempt begun before may finish under its own key), and
an answer that arrives after a cancel or a pause never undoes it."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from paymesh.platform.callers import Merchant
from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.problems import FailedPrecondition
from rebill_svc.charging import ChargeRequest, ChargeResult
from rebill_svc.domain.dunning import Outcome
from rebill_svc.jobs.postgres import PostgresJobStore
from rebill_svc.repository import SubscriptionRepository
from rebill_svc.runner import JobRunner, Leases
from tests.support.fuzzing import examples
from tests.support.mesh import migrated_database

pytestmark = pytest.mark.integration

MERCHANT = Merchant("acct_lifecycle", False)
START = datetime(2029, 1, 1, tzinfo=UTC)
_numbers = itertools.count()


class HeldCharger:
    """Each charge waits at the 'PSP' until `answer` is called with its outcome."""

    def __init__(self):
        self.keys_seen: list[str] = []
        self.entered = asyncio.Event()
        self._answer: asyncio.Future[Outcome] | None = None

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.keys_seen.append(request.idempotency_key)
        self._answer = asyncio.get_running_loop().create_future()
        self.entered.set()
        outcome = await self._answer
        declined = outcome in (Outcome.DECLINED_SOFT, Outcome.DECLINED_HARD)
        return ChargeResult(outcome, "insufficient_funds" if declined else "", "pi_held")

    def answer(self, outcome: Outcome) -> None:
        self.entered.clear()
        self._answer.set_result(outcome)


class SubscriptionLifecycle(RuleBasedStateMachine):
    database_url: str  # set by the test

    def __init__(self):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(self.database_url, 3)
        self.direct = DirectSql(self.engine, 2)
        self.store = PostgresJobStore(self.engine, self.direct)
        self.subscriptions = SubscriptionRepository(self.engine, self.store)
        self.charger = HeldCharger()
        # One connection for the machine's own reads and writes, not one per statement.
        self.db = psycopg.connect(self.database_url, autocommit=True)
        # Unknown outcomes are looked at again at once: the next start re-runs them.
        self.runner = JobRunner(
            self.store, self.charger, "worker", Leases(lease_seconds=30, recheck_seconds=0.001)
        )
        self.in_flight: asyncio.Task | None = None
        self.ended_by_merchant: str | None = None  # canceled | paused, as the merchant left it
        self.keys_started_live: set[str] = set()
        self.now = START
        self.clock = self._run(self.subscriptions.create_clock(MERCHANT, START)).id
        self.subscription = f"sub_machine_{next(_numbers)}"
        self._sql(
            """
            INSERT INTO rebill.subscriptions (id, merchant_id, livemode, payment_method, amount,
              currency, interval, interval_count, billing_cycle_anchor, status, period_number,
              current_period_start, current_period_end, test_clock)
            VALUES (%s, %s, false, 'pm_machine', 4200, 'usd', 'month', 1, %s, 'active', 0, %s,
              %s + interval '1 month', %s)
            """,
            (self.subscription, MERCHANT.id, START, START, START, self.clock),
        )

    def _run(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def _sql(self, query: str, params: tuple) -> list[tuple]:
        cursor = self.db.execute(query, params)
        return cursor.fetchall() if cursor.description else []

    def _status(self) -> str:
        [(status,)] = self._sql(
            "SELECT status FROM rebill.subscriptions WHERE id = %s", (self.subscription,)
        )
        return status

    # --- time ---------------------------------------------------------------------------

    @initialize()
    def the_first_renewal_is_at_the_psp(self):
        """Each interleaving starts where the race is: a renewal's charge in flight."""
        self.advance_clock(31)
        assert self.in_flight is not None

    @rule(days=st.sampled_from([1, 3, 12, 31]))
    def advance_clock(self, days):
        """Time passes; what falls due is queued, and a free worker takes it at once."""
        self.now += timedelta(days=days)
        self._run(self.subscriptions.advance_clock(MERCHANT, self.clock, self.now))
        self._run(self.store.schedule_due(10, among=[self.subscription]))
        self._run(self.store.queue_due_retries(10))
        if self.in_flight is None:
            self.start_a_waiting_renewal()

    # --- renewals -----------------------------------------------------------------------

    @precondition(lambda self: self.in_flight is None)
    @rule()
    def a_worker_takes_a_waiting_renewal(self):
        self.start_a_waiting_renewal()

    def start_a_waiting_renewal(self):
        waiting = self._sql(
            "SELECT id FROM rebill.rebill_jobs WHERE subscription_id = %s AND (status = 'queued'"
            " OR (status = 'running' AND lease_expires_at < now()))",
            (self.subscription,),
        )
        if not waiting:
            return
        task = self.loop.create_task(self.runner.run(waiting[0][0]))
        entered = self.loop.create_task(self.charger.entered.wait())
        self._run(asyncio.wait({task, entered}, return_when=asyncio.FIRST_COMPLETED))
        if not entered.done():  # settled without a charge: the subscription had ended
            entered.cancel()
            self._run(task)
            return
        key = self.charger.keys_seen[-1]
        if key not in self.keys_started_live:
            assert self.ended_by_merchant is None, f"{key} started while {self.ended_by_merchant}"
            self.keys_started_live.add(key)
        self.in_flight = task

    @precondition(lambda self: self.in_flight is not None)
    @rule(outcome=st.sampled_from(list(Outcome)))
    def the_psp_answers(self, outcome):
        self.charger.answer(outcome)
        self._run(self.in_flight)
        self.in_flight = None

    # --- the merchant -------------------------------------------------------------------

    @rule()
    def cancel(self):
        if self._merchant(self.subscriptions.cancel(MERCHANT, self.subscription, False)):
            self.ended_by_merchant = "canceled"

    @rule()
    def pause(self):
        if self._merchant(self.subscriptions.pause(MERCHANT, self.subscription)):
            self.ended_by_merchant = "paused"

    @rule()
    def resume(self):
        if self._merchant(self.subscriptions.resume(MERCHANT, self.subscription)):
            self.ended_by_merchant = None

    def _merchant(self, call) -> bool:
        try:
            self._run(call)
        except FailedPrecondition:
            return False
        return True

    @invariant()
    def a_cancel_or_a_pause_stays(self):
        if self.ended_by_merchant is not None:
            assert self._status() == self.ended_by_merchant

    def teardown(self):
        if self.in_flight is not None:
            self.charger.answer(Outcome.SUCCEEDED)
            self._run(self.in_flight)
        self.db.close()
        self._run(self.direct.close())
        self._run(self.engine.dispose())
        self.loop.close()


@pytest.fixture(scope="module")
def database_url():
    with migrated_database("paymesh_rebill_machine") as infra:
        yield infra.database_url


def test_no_renewal_undoes_a_cancel_or_a_pause_nor_charges_after_one(database_url):
    SubscriptionLifecycle.database_url = database_url
    run = settings(
        max_examples=examples(25),
        stateful_step_count=25,
        deadline=None,
        derandomize=True,  # the same interleavings on every run; PAYMESH_FUZZ_EXAMPLES widens
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )(SubscriptionLifecycle)
    run.TestCase().runTest()
