"""The kit's key store against PostgreSQL (gateway's key table). First claims of idempotency
keys go to the database together (one statement for the requests that arrive while the last
one is out): a key still goes to exactly one request, even when several requests with it land
in the same statement. A claim is fenced: once a newer request has taken its key over, the
old holder can neither bind nor settle it."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from gateway_svc.tables import idempotency_keys
from paymesh.gateway.v1 import gateway_pb2
from paymesh.platform.callers import Merchant
from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.idempotency.keys import key_digest
from paymesh.platform.idempotency.store import Idempotency, bind_key
from paymesh.platform.problems import Conflict
from tests.support.mesh import migrated_database

pytestmark = pytest.mark.integration

MERCHANT = Merchant("acct_claims", False)
REQUEST = gateway_pb2.CreatePaymentIntentRequest(amount=1000, currency="usd")
SECRET = b"secret"


@pytest.fixture()
def infra():
    with migrated_database("paymesh_claims") as infra:
        yield infra


def test_one_key_claimed_by_several_requests_in_one_statement_goes_to_one(infra):
    async def main():
        engine = create_engine(infra.database_url, 2)
        direct = DirectSql(engine, 4)
        keys = Idempotency(engine, direct, idempotency_keys, lambda: SECRET, wait_seconds=0.3)

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
    assert other.key is not None and not other.answered
    won = [a for a in answers if not isinstance(a, str)]
    assert len(won) == 1 and not won[0].answered, answers
    # The others found the key held by a request still running, and gave up waiting.
    assert [a for a in answers if isinstance(a, str)] == ["idempotency_key_in_use"] * 4


def test_a_holder_whose_key_was_taken_over_can_neither_bind_nor_settle_it(infra):
    """A request that looked dead (its key unbound and older than the stale time) is taken
    over by its retry: whatever the old holder does afterwards leaves the retry's claim be."""

    async def main():
        engine = create_engine(infra.database_url, 2)
        direct = DirectSql(engine, 4)
        keys = Idempotency(engine, direct, idempotency_keys, lambda: SECRET, stale_seconds=60)
        try:
            old = await keys.claim(MERCHANT, "fenced", "CreatePaymentIntent", REQUEST)
            with psycopg.connect(infra.database_url, autocommit=True) as db:
                db.execute(
                    "UPDATE gateway.idempotency_keys SET locked_at = now() - interval '2 minutes'"
                    " WHERE merchant_id = %s AND key = %s",
                    (MERCHANT.id, key_digest(SECRET, MERCHANT, "fenced")),
                )
            new = await keys.claim(MERCHANT, "fenced", "CreatePaymentIntent", REQUEST)

            await keys.settle_error(old, RuntimeError("the old holder fails late"))
            await keys.settle(old, "pi_old", None)
            async with engine.begin() as connection:
                with pytest.raises(Conflict) as lost:
                    await bind_key(connection, idempotency_keys, old, "pi_old")
            async with engine.begin() as connection:
                await bind_key(connection, idempotency_keys, new, "pi_new")
            replay = await keys.claim(MERCHANT, "fenced", "CreatePaymentIntent", REQUEST)
            return old, new, lost.value.reason, replay
        finally:
            await direct.close()
            await engine.dispose()

    old, new, lost, replay = asyncio.run(main())
    assert new.fence is not None and new.fence != old.fence
    assert lost == "idempotency_key_in_use"
    assert replay.replay_object == "pi_new"
