"""The card store contract (tests/support/card_store_contract.py) on PostgreSQL, in a
database of the module's own: `PostgresCardStore` keeps every rule its in-memory twin is
unit-tested with (tests/unit/test_vault_card_store.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from paymesh.platform.callers import Merchant
from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.idempotency.store import Claim
from paymesh.platform.outbox import SNAPSHOT
from tests.support import card_store_contract
from tests.support.mesh import migrated_database
from vault_proxy_svc.postgres_card_store import PostgresCardStore

pytestmark = pytest.mark.integration


class SqlArena:
    """The arena on PostgreSQL: keys held and rows read with plain SQL."""

    def __init__(self, database_url: str, store: PostgresCardStore):
        self._url = database_url
        self.store = store

    def _rows(self, sql: str, *args: object) -> list[tuple]:
        with psycopg.connect(self._url, autocommit=True) as db:
            cursor = db.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def open_key(self, merchant: Merchant, key: str) -> Claim:
        [(fence,)] = self._rows(
            "INSERT INTO vault.idempotency_keys (merchant_id, livemode, key, request_hash, state)"
            " VALUES (%s, %s, %s, 'request-hash', 'running') RETURNING locked_at",
            merchant.id,
            merchant.livemode,
            key,
        )
        return Claim(merchant, key, fence=fence)

    def take_over(self, claim: Claim) -> None:
        self._rows(
            "UPDATE vault.idempotency_keys SET locked_at = clock_timestamp()"
            " WHERE merchant_id = %s AND livemode = %s AND key = %s",
            claim.merchant.id,
            claim.merchant.livemode,
            claim.key,
        )

    def key_state(self, merchant: Merchant, key: str) -> tuple[str, str | None] | None:
        rows = self._rows(
            "SELECT state, object_id FROM vault.idempotency_keys"
            " WHERE merchant_id = %s AND livemode = %s AND key = %s",
            merchant.id,
            merchant.livemode,
            key,
        )
        return rows[0] if rows else None

    def audits(self, token: str) -> list[tuple[str, str, dict[str, Any]]]:
        return self._rows(
            "SELECT action, result, details FROM vault.vault_audit WHERE payment_method = %s"
            " ORDER BY id",
            token,
        )

    def events(self, token: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._rows(
            "SELECT event_type, payload FROM vault.outbox WHERE aggregate_id = %s ORDER BY id",
            token,
        )
        return [(event_type, payload[SNAPSHOT]) for event_type, payload in rows]


@pytest.fixture(scope="module")
def contract_database():
    with migrated_database("paymesh_vault_card_store_contract") as infra:
        yield infra


@pytest.mark.parametrize("scenario", card_store_contract.SCENARIOS, ids=lambda s: s.__name__)
def test_the_postgresql_card_store_keeps_the_contract(contract_database, scenario):
    async def main():
        engine = create_engine(contract_database.database_url, 2)
        direct = DirectSql(engine, 2)
        try:
            url = contract_database.database_url
            await scenario(SqlArena(url, PostgresCardStore(engine, direct)))
        finally:
            await direct.close()
            await engine.dispose()

    asyncio.run(main())
