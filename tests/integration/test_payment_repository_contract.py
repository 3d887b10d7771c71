"""One contract, two repositories: every rule of gateway_svc's persistence runs against the
PostgreSQL `PaymentRepository` and its in-memory twin, so unit tests that use the twin test
the real thing's behaviour."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gateway_svc.domain.changes import IntentChange, KeyRef
from gateway_svc.domain.models import AuditEntry, Event, PaymentIntent, new_id
from gateway_svc.domain.status import Action, IntentStatus, Pending, RefundStatus, sources
from gateway_svc.memory_repository import InMemoryPaymentRepository
from gateway_svc.repository.payments import PaymentRepository
from paymesh.platform.callers import Merchant
from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.problems import InvalidArgument, NotFound
from tests.support.mesh import migrated_database

pytestmark = pytest.mark.integration


class SqlProbe:
    """What the contract looks at, read from PostgreSQL."""

    def __init__(self, database_url: str):
        self._url = database_url

    def _rows(self, sql: str, *args):
        with psycopg.connect(self._url) as db:
            return db.execute(sql, args).fetchall()

    def actions(self, object_id: str) -> list[str]:
        return [
            r[0]
            for r in self._rows(
                "SELECT action FROM gateway.payment_audit WHERE object_id = %s ORDER BY id",
                object_id,
            )
        ]

    def events(self, aggregate_id: str) -> list[str]:
        return [
            r[0]
            for r in self._rows(
                "SELECT event_type FROM gateway.outbox WHERE aggregate_id = %s ORDER BY id",
                aggregate_id,
            )
        ]

    def open_key(self, owner: Merchant, key: str) -> KeyRef:
        with psycopg.connect(self._url, autocommit=True) as db:
            [fence] = db.execute(
                "INSERT INTO gateway.idempotency_keys (merchant_id, livemode, key, request_hash,"
                " state) VALUES (%s, %s, %s, 'h', 'running') RETURNING locked_at",
                (owner.id, owner.livemode, key),
            ).fetchone()
        return KeyRef(owner, key, fence)

    def take_over(self, key: KeyRef) -> KeyRef:
        with psycopg.connect(self._url, autocommit=True) as db:
            [fence] = db.execute(
                "UPDATE gateway.idempotency_keys SET locked_at = clock_timestamp()"
                " WHERE merchant_id = %s AND livemode = %s AND key = %s RETURNING locked_at",
                (key.merchant.id, key.merchant.livemode, key.key),
            ).fetchone()
        return dataclasses.replace(key, fence=fence)

    def key(self, key: KeyRef) -> tuple[str, str | None]:
        [row] = self._rows(
            "SELECT state, object_id FROM gateway.idempotency_keys WHERE merchant_id = %s"
            " AND livemode = %s AND key = %s",
            key.merchant.id,
            key.merchant.livemode,
            key.key,
        )
        return row


class MemoryProbe:
    def __init__(self, repository: InMemoryPaymentRepository):
        self._repository = repository

    def actions(self, object_id: str) -> list[str]:
        return [a.action for a in self._repository.audits if a.object_id == object_id]

    def events(self, aggregate_id: str) -> list[str]:
        return [e.type for e in self._repository.events if e.aggregate_id == aggregate_id]

    def open_key(self, owner: Merchant, key: str) -> KeyRef:
        return self._repository.open_key(owner, key)

    def take_over(self, key: KeyRef) -> KeyRef:
        return self._repository.take_over(key)

    def key(self, key: KeyRef) -> tuple[str, str | None]:
        stored = self._repository.keys[(key.merchant.id, key.merchant.livemode, key.key)]
        return stored.state, stored.object_id


@pytest.fixture(scope="module")
def contract_database():
    """A database of the module's own: the session mesh's recovery sweep must not meet the
    half-made intents these scenarios leave (a pending capture at no PSP, say)."""
    with migrated_database("paymesh_contract") as infra:
        yield infra


@pytest.fixture(params=["postgresql", "memory"])
def run(request):
    """Runs `scenario(repository, probe)` against one of the two repositories."""

    def runner(scenario):
        async def main():
            if request.param == "memory":
                repository = InMemoryPaymentRepository()
                return await scenario(repository, MemoryProbe(repository))
            infra = request.getfixturevalue("contract_database")
            engine = create_engine(infra.database_url)
            direct = DirectSql(engine)
            try:
                return await scenario(
                    PaymentRepository(engine, direct), SqlProbe(infra.database_url)
                )
            finally:
                await direct.close()
                await engine.dispose()

        return asyncio.run(main())

    return runner


def merchant() -> Merchant:
    return Merchant(f"acct_c{uuid.uuid4().hex[:12]}", False)


def new_intent(owner: Merchant, **fields) -> PaymentIntent:
    values = {
        "id": new_id("pi_"),
        "merchant_id": owner.id,
        "livemode": owner.livemode,
        "amount": 1000,
        "currency": "usd",
        "status": IntentStatus.REQUIRES_CONFIRMATION,
        "capture_method": "automatic",
        "payment_method": "pm_x",
        **fields,
    }
    return PaymentIntent(**values)


async def insert(repository, owner: Merchant, bind: KeyRef | None = None, **fields):
    intent = new_intent(owner, **fields)
    return await repository.insert_intent(
        intent,
        [AuditEntry.of_intent(intent, "api", "create", "ok")],
        Event.of_intent("payment_intent.created", intent),
        bind,
    )


def succeed(intent: PaymentIntent) -> IntentChange:
    return IntentChange(
        intent,
        {"status": IntentStatus.SUCCEEDED, "amount_received": intent.amount},
        statuses=sources(Action.CHARGED),
        audits=[("api", "confirm", "succeeded", {})],
        event="payment_intent.succeeded",
    )


def test_an_inserted_intent_is_its_merchants_only(run):
    async def scenario(repository, probe):
        owner, other = merchant(), merchant()
        stored = await insert(repository, owner, amount=4200)

        assert (await repository.intent(stored.id, owner)).amount == 4200
        with pytest.raises(NotFound):
            await repository.intent(stored.id, other)
        with pytest.raises(NotFound):
            await repository.intent(stored.id, Merchant(owner.id, True))
        assert probe.actions(stored.id) == ["create"]
        assert probe.events(stored.id) == ["payment_intent.created"]

    run(scenario)


def test_a_change_applies_only_while_its_condition_holds_and_writes_nothing_otherwise(run):
    async def scenario(repository, probe):
        owner = merchant()
        stored = await insert(repository, owner, attempt_key="a1")
        stale = IntentChange(
            stored, {"status": IntentStatus.CANCELED}, statuses=(IntentStatus.REQUIRES_CAPTURE,)
        )
        wrong_attempt = IntentChange(
            stored,
            {"status": IntentStatus.SUCCEEDED},
            statuses=sources(Action.CHARGED),
            attempt_key="another",
            audits=[("api", "confirm", "succeeded", {})],
            event="payment_intent.succeeded",
        )

        assert await repository.change_intent(stale) is None
        assert await repository.change_intent(wrong_attempt) is None
        changed = await repository.change_intent(succeed(stored))
        again = await repository.change_intent(succeed(stored))

        assert changed.status == IntentStatus.SUCCEEDED and changed.amount_received == 1000
        assert again is None  # a repeated writer changes nothing
        assert probe.actions(stored.id) == ["create", "confirm"]
        assert probe.events(stored.id) == ["payment_intent.created", "payment_intent.succeeded"]

    run(scenario)


def test_a_pending_operation_is_settled_only_under_its_own_key(run):
    async def scenario(repository, probe):
        owner = merchant()
        stored = await insert(repository, owner, status=IntentStatus.REQUIRES_CAPTURE)
        reserve = IntentChange(
            stored,
            {
                "pending_operation": Pending.CAPTURE,
                "pending_key": "k1",
                "pending_amount": 600,
                "pending_since": datetime.now(UTC) - timedelta(minutes=5),
            },
            statuses=sources(Action.CAPTURE),
            no_pending=True,
        )
        reserved = await repository.change_intent(reserve)
        second = await repository.change_intent(reserve)
        wrong = IntentChange(
            reserved,
            {"status": IntentStatus.SUCCEEDED, "pending_operation": None},
            statuses=sources(Action.CAPTURE),
            pending_key="k2",
        )

        assert reserved.pending_key == "k1" and second is None  # one capture at a time
        assert await repository.change_intent(wrong) is None
        assert [i.id for i in await repository.pending_intents(60)].count(stored.id) == 1

    run(scenario)


def test_an_intent_waiting_for_its_customer_keeps_its_page_and_is_settled_only_as_answered(run):
    async def scenario(repository, probe):
        owner = merchant()
        stored = await insert(
            repository,
            owner,
            status=IntentStatus.PROCESSING,
            attempt_key="a1",
            return_url="https://shop.example/back",
            pending_operation=Pending.AUTHORIZE,
            pending_key="a1",
            pending_since=datetime.now(UTC) - timedelta(minutes=5),
        )
        waiting = await repository.change_intent(
            IntentChange(
                stored,
                {
                    "status": IntentStatus.REQUIRES_ACTION,
                    "psp_reference": "ch_1",
                    "next_action_url": "https://psp.example/3ds/ch_1",
                    "pending_operation": None,
                    "pending_key": None,
                    "pending_since": None,
                },
                statuses=sources(Action.ACTION_REQUIRED),
                attempt_key="a1",
                audits=[("api", "confirm", "requires_action", {})],
                event="payment_intent.requires_action",
            )
        )
        captured = IntentChange(
            waiting, {"status": IntentStatus.SUCCEEDED}, statuses=sources(Action.CAPTURE)
        )

        read = await repository.intent(stored.id, owner)
        assert read.next_action == {
            "type": "redirect_to_url",
            "redirect_to_url": {
                "url": "https://psp.example/3ds/ch_1",
                "return_url": "https://shop.example/back",
            },
        }
        assert stored.id not in [i.id for i in await repository.pending_intents(0)]
        assert await repository.change_intent(captured) is None  # never captured
        answered = await repository.change_intent(succeed(read))
        assert (answered.status, answered.next_action) == (IntentStatus.SUCCEEDED, None)
        assert probe.events(stored.id) == [
            "payment_intent.created",
            "payment_intent.requires_action",
            "payment_intent.succeeded",
        ]

    run(scenario)


def test_a_key_is_bound_to_its_object_and_done_when_the_outcome_is_recorded(run):
    async def scenario(repository, probe):
        owner = merchant()
        key = probe.open_key(owner, f"k-{uuid.uuid4().hex}")
        stored = await insert(repository, owner, bind=key)
        assert probe.key(key) == ("running", stored.id)

        settled = succeed(stored)
        settled.settles = True
        await repository.change_intent(settled)

        assert probe.key(key) == ("done", stored.id)

    run(scenario)


def test_a_holder_whose_key_was_taken_over_binds_and_completes_nothing(run):
    """A request that looked dead had its key taken over by its retry: whatever it writes
    afterwards, the key stays the retry's."""

    async def scenario(repository, probe):
        owner = merchant()
        old = probe.open_key(owner, f"k-{uuid.uuid4().hex}")
        new = probe.take_over(old)

        late = await insert(repository, owner, bind=old)
        await repository.complete_key(old, late.id)
        late_change = succeed(late)
        late_change.bind = old.ended()
        late_change.settles = True
        await repository.change_intent(late_change)
        paid = await repository.change_intent(succeed(await insert(repository, owner)))
        await repository.reserve_refund(owner, paid.id, 100, "", new_id("re_"), old)
        after_old = probe.key(old)

        made = await insert(repository, owner, bind=new.ended())

        assert new.fence != old.fence
        assert after_old == ("running", None)
        assert probe.key(new) == ("done", made.id)

    run(scenario)


def test_refunds_are_reserved_against_what_is_left_and_a_failed_one_gives_it_back(run):
    async def scenario(repository, probe):
        owner = merchant()
        paid = await repository.change_intent(succeed(await insert(repository, owner)))

        _, first = await repository.reserve_refund(owner, paid.id, 700, "", new_id("re_"), None)
        with pytest.raises(InvalidArgument):
            await repository.reserve_refund(owner, paid.id, 301, "", new_id("re_"), None)
        failed = await repository.finish_refund(first, RefundStatus.FAILED, None, "api")
        twice = await repository.finish_refund(first, RefundStatus.SUCCEEDED, "rf_1", "api")
        _, second = await repository.reserve_refund(owner, paid.id, 0, "", new_id("re_"), None)

        assert failed.status == RefundStatus.FAILED and twice is None
        assert second.amount == 1000  # all of it is free again
        assert (await repository.intent(paid.id)).amount_refunded == 1000
        assert probe.events(first.id) == ["refund.created", "refund.failed"]

    run(scenario)


def test_the_page_is_newest_first_with_a_cursor(run):
    async def scenario(repository, probe):
        owner = merchant()
        made = []
        for _ in range(3):
            made.append((await insert(repository, owner)).id)
            await asyncio.sleep(0.002)
        first, more = await repository.page(owner, 2, "")
        rest, no_more = await repository.page(owner, 2, first[-1].id)

        assert [i.id for i in first + rest] == list(reversed(made))
        assert (more, no_more) == (True, False)

    run(scenario)


def test_a_revoked_payment_method_stays_revoked(run):
    async def scenario(repository, probe):
        owner = merchant()
        assert not await repository.payment_method_revoked("pm_kept")
        await repository.revoke_payment_method(owner, "pm_gone")
        await repository.revoke_payment_method(owner, "pm_gone")  # the vault's retry
        assert await repository.payment_method_revoked("pm_gone")
        assert not await repository.payment_method_revoked("pm_kept")

    run(scenario)


def test_an_intent_of_a_revoked_payment_method_is_not_inserted_when_asked_not_to(run):
    async def scenario(repository, probe):
        owner = merchant()
        kept = new_intent(owner, payment_method="pm_kept")
        gone = new_intent(owner, payment_method="pm_revoked")
        await repository.revoke_payment_method(owner, "pm_revoked")

        def entries(intent):
            audits = [AuditEntry.of_intent(intent, "api", "create", "ok")]
            return audits, Event.of_intent("payment_intent.created", intent)

        inserted = await repository.insert_intent_unless_revoked(kept, *entries(kept), None)
        refused = await repository.insert_intent_unless_revoked(gone, *entries(gone), None)

        assert inserted is not None and inserted.id == kept.id
        assert refused is None
        with pytest.raises(NotFound):
            await repository.intent(gone.id)

    run(scenario)
