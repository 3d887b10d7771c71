"""The job store and dead-letter contracts (tests/support/job_store_contract.py,
dead_letter_contract.py) on PostgreSQL, in a database of the module's own: `PostgresJobStore`
and `DeadLetters` keep every rule their in-memory twins are unit-tested with
(tests/unit/test_rebill_job_store.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
import pytest

from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql
from rebill_svc.dead_letters import DeadLetters
from rebill_svc.jobs.postgres import PostgresJobStore
from tests.support import dead_letter_contract, job_store_contract
from tests.support.job_store_contract import PAYMENT_METHOD
from tests.support.mesh import migrated_database

pytestmark = pytest.mark.integration


class SqlArena:
    """The arena on PostgreSQL: rows arranged and read with plain SQL; time passes."""

    def __init__(self, database_url: str, store: PostgresJobStore, letters: DeadLetters):
        self._url = database_url
        self.store = store
        self.letters = letters

    def _rows(self, sql: str, *args) -> list[tuple]:
        with psycopg.connect(self._url, autocommit=True) as db:
            cursor = db.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def add_due_subscription(self, subscription_id: str, merchant_id: str) -> None:
        self._rows(
            """
            INSERT INTO rebill.subscriptions (id, merchant_id, livemode, payment_method, amount,
              currency, interval, interval_count, billing_cycle_anchor, metadata, status,
              period_number, current_period_start, current_period_end)
            SELECT %s, %s, false, %s, 4200, 'usd', 'month', 1, start, '{}', 'active', 0, start,
              start + interval '1 month'
            FROM (SELECT date_trunc('second', now()) - interval '31 days' AS start) s
            """,
            subscription_id,
            merchant_id,
            PAYMENT_METHOD,
        )

    def set_subscription(self, subscription_id: str, **values: object) -> None:
        for name, value in values.items():
            assert name.isidentifier()
            self._rows(
                f"UPDATE rebill.subscriptions SET {name} = %s WHERE id = %s",  # noqa: S608
                str(value),
                subscription_id,
            )

    def subscription_status(self, subscription_id: str) -> str:
        [(status,)] = self._rows(
            "SELECT status FROM rebill.subscriptions WHERE id = %s", subscription_id
        )
        return status

    def next_attempt_at(self, subscription_id: str) -> datetime | None:
        [(at,)] = self._rows(
            "SELECT next_attempt_at FROM rebill.subscriptions WHERE id = %s", subscription_id
        )
        return at

    def jobs_of(self, subscription_id: str) -> list[str]:
        return [
            row[0]
            for row in self._rows(
                "SELECT id FROM rebill.rebill_jobs WHERE subscription_id = %s"
                " ORDER BY period_start",
                subscription_id,
            )
        ]

    def job(self, job_id: str) -> tuple[str, int, str | None]:
        [row] = self._rows(
            "SELECT status, attempt, lease_owner FROM rebill.rebill_jobs WHERE id = %s", job_id
        )
        return row

    def attempts(self, job_id: str) -> list[tuple[int, str]]:
        return self._rows(
            "SELECT attempt, outcome FROM rebill.rebill_attempts WHERE job_id = %s"
            " ORDER BY attempt",
            job_id,
        )

    def events(self, object_id: str) -> list[str]:
        return [
            row[0]
            for row in self._rows(
                "SELECT event_type FROM rebill.outbox WHERE aggregate_id = %s"
                " AND event_type NOT LIKE 'rebill\\_job.%%' ORDER BY id",
                object_id,
            )
        ]

    def actors(self, object_id: str) -> list[tuple[str, str | None]]:
        return self._rows(
            "SELECT actor, details->>'operator' FROM rebill.rebill_audit WHERE object_id = %s"
            " ORDER BY id",
            object_id,
        )

    def audits(self, object_id: str) -> list[tuple[str, str]]:
        return self._rows(
            "SELECT action, result FROM rebill.rebill_audit WHERE object_id = %s ORDER BY id",
            object_id,
        )

    def messages(self, job_id: str) -> int:
        [(count,)] = self._rows(
            "SELECT count(*) FROM rebill.outbox WHERE aggregate_id = %s"
            " AND event_type LIKE 'rebill\\_job.%%'",
            job_id,
        )
        return count

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.fixture(scope="module")
def contract_database():
    with migrated_database("paymesh_rebill_job_contract") as infra:
        yield infra


@pytest.mark.parametrize(
    "scenario",
    [*job_store_contract.SCENARIOS, *dead_letter_contract.SCENARIOS],
    ids=lambda s: s.__name__,
)
def test_the_postgresql_job_store_and_dead_letters_keep_the_contract(contract_database, scenario):
    async def main():
        engine = create_engine(contract_database.database_url, 2)
        direct = DirectSql(engine, 2)
        try:
            store = PostgresJobStore(engine, direct)
            url = contract_database.database_url
            await scenario(SqlArena(url, store, DeadLetters(engine)))
        finally:
            await direct.close()
            await engine.dispose()

    asyncio.run(main())
