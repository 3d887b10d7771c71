"""The kit's key store against PostgreSQL (gateway's key table). First claims of idempotency
keys go to the database together (one statement for the requests that arrive while the last
one is out): a key still goes to exactly one request, even when several requests with it land
in the same statement. A claim is fenced: once a newer request has taken its key over, the
old holder can neither bind nor settle it: not with the kit's statements, nor with the
gateway's own, which bind the key in the statement that writes its intent."""

from __future__ import annotations

import asyncio
import dataclasses

import psycopg
import pytest

from gateway_svc.domain.changes import IntentChange
from gateway_svc.domain.models import AuditEntry, Event, PaymentIntent, new_id
from gateway_svc.domain.status import IntentStatus
from gateway_svc.repository.payments import PaymentRepository
from gateway_svc.servicer import key_ref
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


def _take_over_window_passes(infra, key: str) -> None:
    """The key's holder looks dead from now on: it took the key two minutes ago."""
    with psycopg.connect(infra.database_url, autocommit=True) as db:
        db.execute(
            "UPDATE gateway.idempotency_keys SET locked_at = now() - interval '2 minutes'"
            " WHERE merchant_id = %s AND key = %s",
            (MERCHANT.id, key_digest(SECRET, MERCHANT, key)),
        )


def _stored_key(infra, key: str) -> tuple[str, str | None]:
    with psycopg.connect(infra.database_url) as db:
        row = db.execute(
            "SELECT state, object_id FROM gateway.idempotency_keys"
            " WHERE merchant_id = %s AND key = %s",
            (MERCHANT.id, key_digest(SECRET, MERCHANT, key)),
        ).fetchone()
    return row[0], row[1]


def test_a_holder_whose_key_was_taken_over_can_neither_bind_nor_settle_it(infra):
    """A request that looked dead (its key unbound and older than the stale time) is taken
    over by its retry: whatever the old holder does afterwards leaves the retry's claim be."""

    async def main():
        engine = create_engine(infra.database_url, 2)
        direct = DirectSql(engine, 4)
        keys = Idempotency(engine, direct, idempotency_keys, lambda: SECRET, stale_seconds=60)
        try:
            old = await keys.claim(MERCHANT, "fenced", "CreatePaymentIntent", REQUEST)
            _take_over_window_passes(infra, "fenced")
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


def _intent(**fields) -> PaymentIntent:
    return PaymentIntent(
        **{
            "id": new_id("pi_"),
            "merchant_id": MERCHANT.id,
            "livemode": MERCHANT.livemode,
            "amount": 1000,
            "currency": "usd",
            "status": IntentStatus.REQUIRES_CONFIRMATION,
            "capture_method": "automatic",
            "payment_method": "pm_x",
            **fields,
        }
    )


async def _insert(repository: PaymentRepository, key) -> PaymentIntent:
    intent = _intent()
    return await repository.insert_intent(
        intent,
        [AuditEntry.of_intent(intent, "api", "create", "ok")],
        Event.of_intent("payment_intent.created", intent),
        key,
    )


def test_on_the_gateway_a_holder_whose_key_was_taken_over_can_neither_bind_nor_complete_it(
    infra,
):
    """The gateway binds a key in the statement that writes its intent (`KeyRef`, from the
    claim): those statements are fenced by the claim as the kit's are."""

    async def main():
        engine = create_engine(infra.database_url, 2)
        direct = DirectSql(engine, 4)
        keys = Idempotency(engine, direct, idempotency_keys, lambda: SECRET, stale_seconds=60)
        repository = PaymentRepository(engine, direct)
        try:
            old = await keys.claim(MERCHANT, "gateway", "CreatePaymentIntent", REQUEST)
            _take_over_window_passes(infra, "gateway")
            new = await keys.claim(MERCHANT, "gateway", "CreatePaymentIntent", REQUEST)
            old_key, new_key = key_ref(old), key_ref(new)
            assert old_key is not None and new_key is not None

            # The old holder, late: its intent's insert, a change of it, and its completion.
            late = await _insert(repository, old_key)
            await repository.complete_key(old_key, late.id)
            confirmed = await repository.change_intent(
                IntentChange(
                    intent=late,
                    values={"status": IntentStatus.CANCELED},
                    statuses=[IntentStatus.REQUIRES_CONFIRMATION],
                    bind=dataclasses.replace(old_key, done=True),
                )
            )
            assert confirmed is not None  # the intent's own change is not the key's
            after_old = _stored_key(infra, "gateway")

            made = await _insert(repository, dataclasses.replace(new_key, done=True))
            replay = await keys.claim(MERCHANT, "gateway", "CreatePaymentIntent", REQUEST)
            return new.resume_from, after_old, made.id, replay.replay_object
        finally:
            await direct.close()
            await engine.dispose()

    resumed, after_old, made, replayed = asyncio.run(main())
    assert resumed is None  # the old holder had bound nothing when it was taken over
    assert after_old == ("running", None)  # still the retry's, bound to nothing
    assert replayed == made
