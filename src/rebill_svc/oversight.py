"""Subscriptions as the back office reads them, across merchants (RebillAdminService):
searched, one subscription's whole story (renewals, dunning, its rebill_audit timeline and
whether the merchant's chain verifies), and how many declined periods dunning recovered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.audit_chain import Break, first_break
from paymesh.platform.audit_keys import AuditKeys
from paymesh.platform.db import autocommit
from paymesh.platform.problems import InvalidArgument, NotFound
from rebill_svc.domain.dunning import DunningState, Outcome, dunning_state
from rebill_svc.domain.jobs import JobStatus
from rebill_svc.domain.search import SearchField
from rebill_svc.jobs.postgres import policy_of
from rebill_svc.tables import rebill_attempts, rebill_audit, rebill_jobs, subscriptions

AUDIT_TABLE = f"{rebill_audit.schema}.{rebill_audit.name}"
DECLINED = (Outcome.DECLINED_SOFT.value, Outcome.DECLINED_HARD.value)


@dataclass(frozen=True)
class SubscriptionSearch:
    """Filters that combine with AND ('' for none)."""

    q: tuple[SearchField, str] | None
    merchant_id: str
    status: str
    limit: int
    starting_after: str


@dataclass(frozen=True)
class SubscriptionStory:
    subscription: Row
    renewals: Sequence[Row]  # newest period first
    dunning: DunningState
    timeline: Sequence[Row]  # oldest first
    chain_break: Break | None


# One row per UTC day of the periods' first attempts: paid at once, declined, and of those
# declined, collected by a later attempt (dunning recovered them).
_RECOVERY = text(
    """
    SELECT to_char(first.at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
           count(*) FILTER (WHERE first.outcome = :succeeded) AS paid_first_time,
           count(*) FILTER (WHERE first.outcome = ANY(:declined)) AS declined,
           count(*) FILTER (WHERE first.outcome = ANY(:declined) AND EXISTS (
             SELECT 1 FROM rebill.rebill_attempts later
             WHERE later.job_id = first.job_id AND later.attempt > 1
               AND later.outcome = :succeeded)) AS recovered
    FROM rebill.rebill_attempts first
    WHERE first.attempt = 1 AND first.at >= :start AND first.at < :end
    GROUP BY 1 ORDER BY 1
    """
)


class SubscriptionOversight:
    def __init__(self, engine: AsyncEngine, keys: AuditKeys | None):
        self._engine = engine
        self._reads = autocommit(engine)
        self._keys = keys

    async def search(self, which: SubscriptionSearch) -> tuple[Sequence[Row], bool]:
        """A page of matching subscriptions, newest first, and whether more follow."""
        c = subscriptions.c
        query = select(subscriptions)
        if which.q is not None:
            field, value = which.q
            query = query.where(c[field.value] == value)
        if which.merchant_id:
            query = query.where(c.merchant_id == which.merchant_id)
        if which.status:
            query = query.where(c.status == which.status)
        async with self._reads.connect() as connection:
            if which.starting_after:
                cursor = (
                    await connection.execute(
                        select(c.created_at, c.id).where(c.id == which.starting_after)
                    )
                ).first()
                if cursor is None:
                    raise InvalidArgument.for_field(
                        "starting_after", "resource_missing", "no such subscription"
                    )
                query = query.where(
                    tuple_(c.created_at, c.id) < tuple_(cursor.created_at, cursor.id)
                )
            rows = (
                await connection.execute(
                    query.order_by(c.created_at.desc(), c.id.desc()).limit(which.limit + 1)
                )
            ).all()
        return rows[: which.limit], len(rows) > which.limit

    async def story(self, subscription_id: str) -> SubscriptionStory:
        async with self._reads.connect() as connection:
            subscription = (
                await connection.execute(
                    select(subscriptions).where(subscriptions.c.id == subscription_id)
                )
            ).first()
            if subscription is None:
                raise NotFound("no such subscription", reason="resource_missing")
            renewals = (
                await connection.execute(
                    select(rebill_jobs)
                    .where(rebill_jobs.c.subscription_id == subscription_id)
                    .order_by(rebill_jobs.c.period_start.desc(), rebill_jobs.c.created_at.desc())
                )
            ).all()
            open_period_attempts = 0
            if renewals and renewals[0].status != JobStatus.SUCCEEDED:
                open_period_attempts = await connection.scalar(
                    select(func.count()).where(rebill_attempts.c.job_id == renewals[0].id)
                )
            policy = await policy_of(connection, subscription.merchant_id)
            timeline = (
                await connection.execute(
                    select(rebill_audit)
                    .where(
                        rebill_audit.c.merchant_id == subscription.merchant_id,
                        rebill_audit.c.object_id.in_([subscription_id, *(r.id for r in renewals)]),
                    )
                    .order_by(rebill_audit.c.at, rebill_audit.c.id)
                )
            ).all()
        chain_break = await first_break(
            self._engine, AUDIT_TABLE, self._keys, merchant_id=subscription.merchant_id
        )
        return SubscriptionStory(
            subscription,
            renewals,
            dunning_state(policy, open_period_attempts or 0, subscription.next_attempt_at),
            timeline,
            chain_break,
        )

    async def recovery(self, start: datetime, end: datetime) -> Sequence[Row]:
        async with self._reads.connect() as connection:
            return (
                await connection.execute(
                    _RECOVERY,
                    {
                        "succeeded": Outcome.SUCCEEDED.value,
                        "declined": list(DECLINED),
                        "start": start,
                        "end": end,
                    },
                )
            ).all()
