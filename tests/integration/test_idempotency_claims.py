"""First claims of idempotency keys go to the database together (one statement for the
requests that arrive while the last one is out): a key still goes to exactly one request,
even when several requests with it land in the same statement."""

from __future__ import annotations

import asyncio

import pytest

from gateway_svc.idempotency import Idempotency
from paymesh.gateway.v1 import gateway_pb2
from paymesh.platform.callers import Merchant
from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.problems import Conflict
from tests.support.mesh import migrated_database

pytestmark = pytest.mark.integration

MERCHANT = Merchant("acct_claims", False)
REQUEST = gateway_pb2.CreatePaymentIntentRequest(amount=1000, currency="usd")


@pytest.fixture()
def infra():
    with migrated_database("paymesh_claims") as infra:
        yield infra


def test_one_key_claimed_by_several_requests_in_one_statement_goes_to_one(infra):
    async def main():
        engine = create_engine(infra.database_url, 2)
        direct = DirectSql(engine, 4)
        keys = Idempotency(engine, direct, b"secret", wait_seconds=0.3)

        async def claim(key: str):
            try:
                return await keys.claim(MERCHANT, key, "CreatePaymentIntent", REQUEST)
            except Conflict as conflict:
                return conflict.reason

        try:
            # The first claim leaves alone; the five claims of `k` wait for it and then leave
            # together, in one statement.
            return await asyncio.gather(claim("other"), *(claim("k") for _ in range(5)))
        finally:
            await direct.close()
            await engine.dispose()

    other, *answers = asyncio.run(main())
    assert other.key is not None and not other.is_replay
    won = [a for a in answers if not isinstance(a, str)]
    assert len(won) == 1 and not won[0].is_replay, answers
    # The others found the key held by a request still running, and gave up waiting.
    assert [a for a in answers if isinstance(a, str)] == ["idempotency_key_in_use"] * 4
