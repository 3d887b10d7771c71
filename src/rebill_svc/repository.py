"""Reads and writes behind the merchant API: subscriptions, their rebills and test clocks.
Every change is one transaction with its audit row and outbox event; no protobuf here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.callers import Merchant, newest_first_page, owned_by
from paymesh.platform.db import autocommit, constant
from paymesh.platform.idempotency.store import Claim, bind_key
from paymesh.platform.problems import InvalidArgument, NotFound
from rebill_svc import records
from rebill_svc.domain.jobs import UNSETTLED, JobAction, JobStatus, sources
from rebill_svc.domain.periods import Interval
from rebill_svc.domain.subscriptions import (
    QUEUES,
    NewSubscription,
    Periods,
    Plan,
    Status,
    cancelable,
    pausable,
    resumable,
    resumed_periods,
)
from rebill_svc.domain.updates import (
    SubscriptionUpdate,
    changed_values,
    open_period_attempt,
    retries_now,
)
from rebill_svc.jobs.models import Claimed
from rebill_svc.jobs.postgres import PostgresJobStore
from rebill_svc.tables import (
    idempotency_keys,
    rebill_attempts,
    rebill_jobs,
    subscriptions,
    test_clocks,
)


def _missing(kind: str) -> NotFound:
    return NotFound(f"no such {kind}", reason="resource_missing")


async def _locked(
    connection: AsyncConnection, table, object_id: str, merchant: Merchant, kind: str
) -> Row:
    """The merchant's row of `table`, locked until the transaction ends; 404 if none."""
    row = (await connection.execute(owned_by(table, object_id, merchant).with_for_update())).first()
    if row is None:
        raise _missing(kind)
    return row


@dataclass(frozen=True)
class Created:
    subscription: Row
    first_period: Claimed | None  # leased to the caller: charge it now


@dataclass(frozen=True)
class Updated:
    subscription: Row
    open_period: Claimed | None  # retried with the new card, leased to the caller: charge it now


class SubscriptionRepository:
    def __init__(
        self, engine: AsyncEngine, jobs: PostgresJobStore, lists: AsyncEngine | None = None
    ):
        self._engine = engine
        self._reads = autocommit(engine)
        self._lists = autocommit(lists or engine)  # a replica's, maybe a moment behind
        self._jobs = jobs

    # --- clocks -------------------------------------------------------------------------

    async def now(self, merchant: Merchant, test_clock: str) -> datetime:
        """The time a new subscription starts at: its test clock's, else the database's."""
        async with self._reads.connect() as connection:
            if not test_clock:
                return await connection.scalar(select(func.now()))
            if merchant.livemode:
                raise InvalidArgument.for_field(
                    "test_clock", "livemode_test_clock", "test clocks exist in test mode only"
                )
            clock = (await connection.execute(owned_by(test_clocks, test_clock, merchant))).first()
        if clock is None:
            raise InvalidArgument.for_field("test_clock", "resource_missing", "no such test clock")
        return clock.frozen_time

    async def create_clock(self, merchant: Merchant, frozen_time: datetime) -> Row:
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    test_clocks.insert()
                    .values(
                        id=records.new_id("clock_"),
                        merchant_id=merchant.id,
                        livemode=merchant.livemode,
                        frozen_time=frozen_time,
                    )
                    .returning(test_clocks)
                )
            ).one()
            await records.audit(
                connection,
                merchant_id=merchant.id,
                actor="api",
                action="test_clock.create",
                object_id=row.id,
                result="ready",
                frozen_time=frozen_time.isoformat(),
            )
        return row

    async def clock(self, merchant: Merchant, clock_id: str) -> tuple[Row, str]:
        """The clock and its status: `advancing` while anything due on it is unsettled."""
        async with self._reads.connect() as connection:
            clock = (await connection.execute(owned_by(test_clocks, clock_id, merchant))).first()
            if clock is None:
                raise _missing("test_clock")
            return clock, await _clock_status(connection, clock)

    async def advance_clock(
        self, merchant: Merchant, clock_id: str, frozen_time: datetime
    ) -> tuple[Row, str]:
        async with self._engine.begin() as connection:
            clock = await _locked(connection, test_clocks, clock_id, merchant, "test_clock")
            if frozen_time <= clock.frozen_time:
                raise InvalidArgument.for_field(
                    "frozen_time",
                    "clock_cannot_go_back",
                    "frozen_time must be later than the clock's time",
                )
            clock = (
                await connection.execute(
                    update(test_clocks)
                    .where(test_clocks.c.id == clock_id)
                    .values(frozen_time=frozen_time)
                    .returning(test_clocks)
                )
            ).one()
            await records.audit(
                connection,
                merchant_id=merchant.id,
                actor="api",
                action="test_clock.advance",
                object_id=clock_id,
                result="advancing",
                frozen_time=frozen_time.isoformat(),
            )
            await records.wake_scheduler(connection)
            return clock, await _clock_status(connection, clock)

    # --- subscriptions ------------------------------------------------------------------

    async def create(
        self,
        merchant: Merchant,
        *,
        new: NewSubscription,
        payment_method: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        test_clock: str,
        key: Claim,
        lease_owner: str,
        lease_seconds: float,
    ) -> Created:
        """The new subscription and, when its first period is charged now, that period's
        job, already leased to the caller; the request's key is bound to it in the same
        transaction."""
        subscription_id = records.new_id("sub_")
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    subscriptions.insert()
                    .values(
                        id=subscription_id,
                        merchant_id=merchant.id,
                        livemode=merchant.livemode,
                        payment_method=payment_method,
                        amount=amount,
                        currency=currency,
                        interval=new.interval.value,
                        interval_count=new.interval_count,
                        billing_cycle_anchor=new.anchor,
                        trial_end=new.current.end if new.status == Status.TRIALING else None,
                        test_clock=test_clock or None,
                        metadata=metadata,
                        status=new.status.value,
                        period_number=new.current.number,
                        current_period_start=new.current.start,
                        current_period_end=new.current.end,
                    )
                    .returning(subscriptions)
                )
            ).one()
            await bind_key(connection, idempotency_keys, key, row.id)
            await records.event(connection, "subscription.created", "subscription", row)
            claimed = None
            if new.charge_now:
                job = await self._first_job(connection, row, lease_owner, lease_seconds)
                claimed = await self._jobs.claimed(connection, job)
            await records.audit(
                connection,
                merchant_id=merchant.id,
                actor="api",
                action="subscription.create",
                object_id=row.id,
                result=row.status,
                amount=amount,
                currency=currency,
                interval=new.interval.value,
                interval_count=new.interval_count,
            )
            return Created(row, claimed)

    async def _first_job(
        self, connection: AsyncConnection, row: Row, owner: str, lease_seconds: float
    ) -> Row:
        return (
            await connection.execute(
                rebill_jobs.insert()
                .values(
                    id=records.new_id("rj_"),
                    subscription_id=row.id,
                    merchant_id=row.merchant_id,
                    livemode=row.livemode,
                    test_clock=row.test_clock,
                    queue=QUEUES[Interval(row.interval)],
                    period_number=row.period_number,
                    period_start=row.current_period_start,
                    period_end=row.current_period_end,
                    amount=row.amount,
                    currency=row.currency,
                    status=JobStatus.RUNNING.value,  # a first period: leased to its creation
                    due_at=row.current_period_start,
                    lease_owner=owner,
                    lease_expires_at=func.now() + timedelta(seconds=lease_seconds),
                    heartbeat_at=func.now(),
                    runs=1,
                    attempt_runs=1,
                    payment_method=row.payment_method,
                )
                .returning(rebill_jobs)
            )
        ).one()

    async def get(self, subscription_id: str, merchant: Merchant) -> Row:
        """The merchant's object in the merchant's mode; another's is as good as missing."""
        async with self._reads.connect() as connection:
            row = (
                await connection.execute(owned_by(subscriptions, subscription_id, merchant))
            ).first()
        if row is None:
            raise _missing("subscription")
        return row

    async def page(
        self, merchant: Merchant, limit: int, starting_after: str, status: str
    ) -> tuple[Sequence[Row], bool]:
        filters = [subscriptions.c.status == status] if status else []
        async with self._lists.connect() as connection:
            return await newest_first_page(
                connection, subscriptions, merchant, limit, starting_after, "subscription", *filters
            )

    async def renewal(self, renewal_id: str, merchant: Merchant) -> Row:
        """The merchant's renewal (a period's job) in the merchant's mode."""
        async with self._reads.connect() as connection:
            row = (await connection.execute(owned_by(rebill_jobs, renewal_id, merchant))).first()
        if row is None:
            raise _missing("renewal")
        return row

    async def rebills(
        self, merchant: Merchant, subscription_id: str, limit: int, offset: int
    ) -> tuple[list[Row], bool]:
        await self.get(subscription_id, merchant)
        attempts, jobs = rebill_attempts.c, rebill_jobs.c
        async with self._lists.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        jobs.period_start,
                        jobs.period_end,
                        jobs.amount,
                        jobs.currency,
                        attempts.attempt,
                        attempts.outcome,
                        attempts.decline_code,
                        attempts.payment_intent,
                        attempts.at,
                    )
                    .select_from(rebill_attempts.join(rebill_jobs, jobs.id == attempts.job_id))
                    .where(attempts.subscription_id == subscription_id)
                    .order_by(jobs.period_start.desc(), attempts.attempt.desc())
                    .limit(limit + 1)
                    .offset(offset)
                )
            ).all()
        return rows[:limit], len(rows) > limit

    async def cancel(self, merchant: Merchant, subscription_id: str, at_period_end: bool) -> Row:
        def change(row: Row, now: datetime) -> dict:
            cancelable(row.status)
            if at_period_end:
                return {"cancel_at_period_end": True}
            return {"status": Status.CANCELED.value, "canceled_at": now, "next_attempt_at": None}

        return await self._change(
            merchant, subscription_id, "subscription.cancel", change, at_period_end=at_period_end
        )

    async def pause(self, merchant: Merchant, subscription_id: str) -> Row:
        def change(row: Row, _now: datetime) -> dict:
            pausable(row.status)
            return {"status": Status.PAUSED.value}

        return await self._change(merchant, subscription_id, "subscription.pause", change)

    async def resume(self, merchant: Merchant, subscription_id: str) -> Row:
        def change(row: Row, now: datetime) -> dict:
            resumable(row.status)
            plan = Plan(Interval(row.interval), row.interval_count, row.billing_cycle_anchor)
            current = Periods(row.period_number, row.current_period_start, row.current_period_end)
            resumed = resumed_periods(plan, current, now)
            return {
                "status": Status.ACTIVE.value if resumed.number >= 0 else Status.TRIALING.value,
                "period_number": resumed.number,
                "current_period_start": resumed.start,
                "current_period_end": resumed.end,
            }

        return await self._change(merchant, subscription_id, "subscription.resume", change)

    async def update(
        self,
        merchant: Merchant,
        subscription_id: str,
        change: SubscriptionUpdate,
        *,
        key: Claim,
        lease_owner: str,
        lease_seconds: float,
    ) -> Updated:
        """Applies `change` (domain.updates) with its event and audit rows. When it retries
        the open period now, that period's job comes back leased to the caller and the
        subscription is past_due until the attempt settles. The request's key is bound to
        the subscription in the same transaction."""
        async with self._engine.begin() as connection:
            row = await _locked(
                connection, subscriptions, subscription_id, merchant, "subscription"
            )
            await bind_key(connection, idempotency_keys, key, row.id)
            values = changed_values(row.status, row._mapping, change)
            job, attempt = None, None
            if retries_now(row.status, change):
                job = await _open_period_job(connection, row)
                if job is not None:
                    attempt = open_period_attempt(job.status, job.attempt, job.attempt_runs)
            if not values and attempt is None:
                return Updated(row, None)
            if attempt is not None:
                values.update(status=Status.PAST_DUE.value, next_attempt_at=None)
            row = (
                await connection.execute(
                    update(subscriptions)
                    .where(subscriptions.c.id == row.id)
                    .values(**values, updated_at=func.now())
                    .returning(subscriptions)
                )
            ).one()
            await records.event(connection, "subscription.updated", "subscription", row)
            audit = [
                records.audit_values(
                    merchant_id=merchant.id,
                    actor="api",
                    action="subscription.update",
                    object_id=row.id,
                    result=row.status,
                    changed=sorted(values.keys() - {"status", "next_attempt_at"}),
                    amount=row.amount,
                )
            ]
            open_period = None
            if job is not None and attempt is not None:
                job = await _run_now(connection, job, attempt, row, lease_owner, lease_seconds)
                open_period = await self._jobs.claimed(connection, job)
                audit.append(
                    records.audit_values(
                        merchant_id=merchant.id,
                        actor="api",
                        action="rebill.retry_now",
                        object_id=job.id,
                        result=JobStatus.RUNNING,
                        subscription_id=row.id,
                        attempt=attempt,
                    )
                )
            await records.audit_many(connection, audit)
            return Updated(row, open_period)

    async def _change(
        self,
        merchant: Merchant,
        subscription_id: str,
        action: str,
        change: Callable[[Row, datetime], dict],
        **details,
    ) -> Row:
        async with self._engine.begin() as connection:
            row = await _locked(
                connection, subscriptions, subscription_id, merchant, "subscription"
            )
            now = await _clock_now(connection, row.test_clock)
            values = change(row, now)
            row = (
                await connection.execute(
                    update(subscriptions)
                    .where(subscriptions.c.id == subscription_id)
                    .values(**values, updated_at=func.now())
                    .returning(subscriptions)
                )
            ).one()
            if row.status == Status.CANCELED:
                await _drop_waiting_retry(connection, row.id)
            kind = (
                "subscription.canceled" if row.status == Status.CANCELED else "subscription.updated"
            )
            await records.event(connection, kind, "subscription", row)
            await records.wake_scheduler(connection)
            await records.audit(
                connection,
                merchant_id=merchant.id,
                actor="api",
                action=action,
                object_id=row.id,
                result=row.status,
                **details,
            )
        return row


async def _open_period_job(connection: AsyncConnection, row: Row) -> Row | None:
    """The job of the subscription's current period, locked: a worker's claim of it waits
    for this transaction, then finds it taken if it was."""
    jobs = rebill_jobs.c
    return (
        await connection.execute(
            select(rebill_jobs)
            .where(jobs.subscription_id == row.id, jobs.period_start == row.current_period_start)
            .with_for_update()
        )
    ).first()


async def _run_now(
    connection: AsyncConnection,
    job: Row,
    attempt: int,
    subscription: Row,
    owner: str,
    lease_seconds: float,
) -> Row:
    """`job` leased to `owner` for `attempt` with the subscription's card, started now."""
    return (
        await connection.execute(
            update(rebill_jobs)
            .where(
                rebill_jobs.c.id == job.id,
                rebill_jobs.c.status.in_(sources(JobAction.RUN_NOW)),
            )
            .values(
                status=JobStatus.RUNNING.value,
                attempt=attempt,
                attempt_runs=1,
                runs=rebill_jobs.c.runs + 1,
                payment_method=subscription.payment_method,
                due_at=await _clock_now(connection, subscription.test_clock),
                lease_owner=owner,
                lease_expires_at=func.now() + timedelta(seconds=lease_seconds),
                heartbeat_at=func.now(),
                updated_at=func.now(),
            )
            .returning(rebill_jobs)
        )
    ).one()


async def _drop_waiting_retry(connection: AsyncConnection, subscription_id: str) -> None:
    """A canceled subscription's declined period is not retried (in the cancel's own
    transaction). A job in a worker's hands finishes its attempt (it may already have charged)
    and changes nothing else: its settle waits for the cancel and reads it."""
    await connection.execute(
        update(rebill_jobs)
        .where(
            rebill_jobs.c.subscription_id == subscription_id,
            rebill_jobs.c.status.in_(sources(JobAction.DROP_RETRY)),
        )
        .values(status=JobStatus.FAILED.value, updated_at=func.now())
    )


async def _clock_now(connection: AsyncConnection, clock_id: str | None) -> datetime:
    if clock_id is None:
        return await connection.scalar(select(func.now()))
    return await connection.scalar(
        select(test_clocks.c.frozen_time).where(test_clocks.c.id == clock_id)
    )


async def _clock_status(connection: AsyncConnection, clock: Row) -> str:
    subs, jobs = subscriptions.c, rebill_jobs.c
    due_subscription = select(subs.id).where(
        subs.test_clock == clock.id,
        subs.status.in_([constant(Status.ACTIVE.value), constant(Status.TRIALING.value)]),
        subs.current_period_end <= clock.frozen_time,
    )
    unsettled_job = select(jobs.id).where(
        jobs.test_clock == clock.id,
        jobs.status.in_([constant(status) for status in UNSETTLED]),
        ~and_(jobs.status == constant(JobStatus.SCHEDULED), jobs.due_at > clock.frozen_time),
    )
    busy = await connection.scalar(select(due_subscription.exists() | unsettled_job.exists()))
    return "advancing" if busy else "ready"
