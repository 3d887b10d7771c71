"""The delivery store contract (tests/support/delivery_store_contract.py) on PostgreSQL, in a
database of this module's own; tests/unit/test_delivery_store_contract.py runs it on the
in-memory twin."""

from __future__ import annotations

import asyncio
import itertools

import psycopg
import pytest

from paymesh.platform.db import create_engine
from tests.support.delivery_store_contract import DeliveryRow, EndpointRow, scenarios
from tests.support.mesh import migrated_database
from webhook_svc import tables
from webhook_svc.outbound.delivery_store import PostgresDeliveryStore
from webhook_svc.outbound.endpoints import EndpointStore

pytestmark = pytest.mark.integration


class SqlWorld:
    """The World of PostgreSQL: rows as the merchant's API and the intake write them."""

    def __init__(self, database_url: str):
        self._db = psycopg.connect(database_url, autocommit=True)
        self._names = itertools.count(1)
        self._db.execute(
            "TRUNCATE webhook.delivery_attempts, webhook.deliveries, webhook.events,"
            " webhook.webhook_endpoints, webhook.outbox"
        )

    def close(self) -> None:
        self._db.close()

    def _one(self, sql: str, *args):
        return self._db.execute(sql, args).fetchone()

    def endpoint(self, *, enabled: bool = True, failing_for: float | None = None) -> str:
        return self._one(
            "INSERT INTO webhook.webhook_endpoints (id, merchant_id, livemode, url,"
            " enabled_events, status, signature_scheme, secret, failing_since)"
            " VALUES (%s, 'acct_contract', false, 'https://example.com/hook', '{*}', %s, 'v1',"
            " 'sealed', now() - make_interval(secs => %s)) RETURNING id",
            f"we_{next(self._names)}",
            "enabled" if enabled else "disabled",
            failing_for,
        )[0]

    def event(self, object_id: str, sequence: int = 1) -> str:
        return self._one(
            "INSERT INTO webhook.events (id, type, merchant_id, livemode, object_type,"
            " object_id, sequence, object, created_at, txid)"
            " VALUES (%s, 'payment_intent.succeeded', 'acct_contract', false, 'payment_intent',"
            " %s, %s, '{}', now(), txid_current()) RETURNING id",
            f"evt_{next(self._names)}",
            object_id,
            sequence,
        )[0]

    def delivery(
        self,
        event_id: str,
        endpoint_id: str,
        *,
        due_in: float = 0.0,
        status: str = "pending",
        leased_by: str | None = None,
    ) -> int:
        return self._one(
            "INSERT INTO webhook.deliveries (event_id, endpoint_id, status, next_attempt_at,"
            " lease_token) VALUES (%s, %s, %s, now() + make_interval(secs => %s), %s)"
            " RETURNING id",
            event_id,
            endpoint_id,
            status,
            due_in,
            leased_by,
        )[0]

    def row(self, delivery_id: int) -> DeliveryRow:
        return DeliveryRow(
            *self._one(
                "SELECT status, attempts, lease_token IS NOT NULL, last_status_code, last_error,"
                " delivered_at IS NOT NULL FROM webhook.deliveries WHERE id = %s",
                delivery_id,
            )
        )

    def endpoint_row(self, endpoint_id: str) -> EndpointRow:
        return EndpointRow(
            *self._one(
                "SELECT status, disabled_reason, failing_since IS NOT NULL"
                " FROM webhook.webhook_endpoints WHERE id = %s",
                endpoint_id,
            )
        )

    def attempts(self, event_id: str) -> list[tuple[int, int | None]]:
        return self._db.execute(
            "SELECT attempt, status_code FROM webhook.delivery_attempts WHERE event_id = %s"
            " ORDER BY id",
            (event_id,),
        ).fetchall()

    def disabled_events(self, endpoint_id: str) -> int:
        return self._one(
            "SELECT count(*) FROM webhook.outbox WHERE event_type = 'webhook_endpoint.disabled'"
            " AND aggregate_id = %s",
            endpoint_id,
        )[0]


@pytest.fixture(scope="module")
def contract_database():
    """A database of the module's own: the scenarios empty the webhook tables."""
    with migrated_database("paymesh_delivery_contract") as infra:
        yield infra


@scenarios
def test_the_postgresql_delivery_store_keeps_the_contract(scenario, contract_database):
    async def main():
        engine = create_engine(contract_database.database_url)
        world = SqlWorld(contract_database.database_url)
        try:
            store = PostgresDeliveryStore(
                engine, tables.outbox, lambda _endpoint: "", EndpointStore.SECRET_COLUMNS
            )
            await scenario(store, world)
        finally:
            world.close()
            await engine.dispose()

    asyncio.run(main())
