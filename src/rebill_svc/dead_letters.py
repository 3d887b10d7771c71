"""`rebill.dead`: messages no worker could process. rebill_svc moves each one into the
`dead_letters` table (then acks it), where operators list, retry or discard it through
RebillAdminService. A retry hands the job to the workers again; its attempt charges under the
same idempotency key as before, so a retried job charges at most once. A discard drops the
message and a job that waits for a worker without having started its attempt; if that was a
dunning retry, the period is given up as after its last decline."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.amqp_consumer import Delivery, Verdict
from paymesh.platform.db import autocommit
from paymesh.platform.operators import actor_and_details
from paymesh.platform.problems import FailedPrecondition, NotFound
from rebill_svc import records
from rebill_svc.domain.dunning import GiveUp
from rebill_svc.domain.jobs import (
    JOB_EVENTS,
    AttemptStarted,
    DeadLetterStatus,
    discard_plan,
    move,
    republished_on_retry,
    sources,
)
from rebill_svc.domain.subscriptions import Status, after_attempt
from rebill_svc.jobs.postgres import policy_of
from rebill_svc.tables import dead_letters, rebill_jobs, subscriptions
from rebill_svc.topology import job_id_of

MAX_BODY = 4096


def death_of(delivery: Delivery) -> tuple[str, str]:
    """The queue a dead message came from, and why it died."""
    headers = delivery.properties.headers or {}
    queue = headers.get("x-first-death-queue")
    reason = headers.get("x-first-death-reason")
    return (
        queue.decode() if isinstance(queue, bytes) else str(queue or "unknown"),
        reason.decode() if isinstance(reason, bytes) else str(reason or "unknown"),
    )


class DeadLetters:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reads = autocommit(engine)

    async def receive(self, delivery: Delivery) -> Verdict:
        queue, reason = death_of(delivery)
        async with self._engine.begin() as connection:
            await connection.execute(
                dead_letters.insert().values(
                    id=records.new_id("dl_"),
                    queue=queue,
                    job_id=job_id_of(delivery.body),
                    reason=reason,
                    body=delivery.body[:MAX_BODY].decode("utf-8", "replace"),
                )
            )
        return Verdict.ACK

    async def list(self, status: str, limit: int) -> list[Row]:
        async with self._reads.connect() as connection:
            return (
                await connection.execute(
                    select(dead_letters)
                    .where(dead_letters.c.status == status)
                    .order_by(dead_letters.c.received_at, dead_letters.c.id)
                    .limit(limit)
                )
            ).all()

    async def retry(self, letter_id: str, operator: str = "") -> Row:
        """`operator`: the email of who asked (the audit row's actor is then `operator`),
        or '' for the `ops` identity."""
        async with self._engine.begin() as connection:
            letter = await self._dead(connection, letter_id)
            job = await _job_of(connection, letter)
            if job is None:
                raise FailedPrecondition(
                    "this message names no job to retry; discard it", reason="nothing_to_retry"
                )
            if republished_on_retry(job.status):
                await records.publish_job(connection, job)
            actor, by = actor_and_details(operator, "ops")
            await records.audit(
                connection,
                merchant_id=job.merchant_id,
                actor=actor,
                action="dead_letter.retry",
                object_id=job.id,
                result=job.status,
                dead_letter=letter_id,
                **by,
            )
            return await self._resolve(connection, letter_id, DeadLetterStatus.RETRIED)

    async def discard(self, letter_id: str, operator: str = "") -> Row:
        """Drops the message and, when its job waits for a worker with an attempt nobody has
        started, the job too: the period is settled as not charged (`rebill.failed`); an
        active subscription renews at its next period, a past-due one (a dunning retry was
        dropped) ends as its merchant's policy says. An attempt that was started may have charged:
        it can only be retried, so that it finishes under its key."""
        async with self._engine.begin() as connection:
            letter = await self._dead(connection, letter_id)
            job = await _job_of(connection, letter)
            if job is not None:
                await _drop_unstarted(connection, job, letter_id, operator)
            return await self._resolve(connection, letter_id, DeadLetterStatus.DISCARDED)

    @staticmethod
    async def _dead(connection, letter_id: str) -> Row:
        letter = (
            await connection.execute(
                select(dead_letters).where(dead_letters.c.id == letter_id).with_for_update()
            )
        ).first()
        if letter is None:
            raise NotFound("no such dead letter", reason="resource_missing")
        if letter.status != DeadLetterStatus.DEAD:
            raise FailedPrecondition(
                f"the dead letter was already {letter.status}", reason="dead_letter_resolved"
            )
        return letter

    @staticmethod
    async def _resolve(connection, letter_id: str, status: DeadLetterStatus) -> Row:
        return (
            await connection.execute(
                update(dead_letters)
                .where(dead_letters.c.id == letter_id)
                .values(status=status.value, resolved_at=func.now())
                .returning(dead_letters)
            )
        ).one()


async def _drop_unstarted(connection, job: Row, letter_id: str, operator: str) -> None:
    """Discard's part for the letter's job: refused if its attempt was started; dropped if
    it waits for a worker (else, already settled or waiting for its retry's time, it stays
    as it is); audited either way."""
    try:
        action = discard_plan(job.status, job.attempt_runs)
    except AttemptStarted:
        raise FailedPrecondition(
            "this job's attempt was started and may have charged; retry the letter"
            " so that it finishes",
            reason="attempt_started",
        ) from None
    given_up = []
    if action is not None:
        dropped = move(job.status, action)
        job = (
            await connection.execute(
                update(rebill_jobs)
                .where(rebill_jobs.c.id == job.id, rebill_jobs.c.status.in_(sources(action)))
                .values(status=dropped, updated_at=func.now())
                .returning(rebill_jobs)
            )
        ).one()
        await records.event(connection, JOB_EVENTS[dropped], "rebill_job", job)
        await records.wake_scheduler(connection)  # the subscription may be due
        given_up = await _give_up_dunning(connection, job, operator)
    actor, by = actor_and_details(operator, "ops")
    discarded = records.audit_values(
        merchant_id=job.merchant_id,
        actor=actor,
        action="dead_letter.discard",
        object_id=job.id,
        result=job.status,
        dead_letter=letter_id,
        **by,
    )
    await records.audit_many(connection, [discarded, *given_up])


async def _give_up_dunning(connection, job: Row, operator: str) -> list[dict]:
    """A past-due subscription waited on the dropped job's period: dunning gives up on it
    here, as after its last decline (the merchant's final status). Returns the audit rows."""
    subscription = (
        await connection.execute(
            select(subscriptions).where(subscriptions.c.id == job.subscription_id).with_for_update()
        )
    ).one()
    if subscription.status != Status.PAST_DUE:
        return []
    policy = await policy_of(connection, job.merchant_id)
    after = after_attempt(GiveUp(policy.final_status), subscription.status)
    canceled = after.subscription_status == Status.CANCELED
    row = (
        await connection.execute(
            update(subscriptions)
            .where(subscriptions.c.id == subscription.id)
            .values(
                status=after.subscription_status.value,
                next_attempt_at=None,
                canceled_at=func.now() if canceled else subscriptions.c.canceled_at,
                updated_at=func.now(),
            )
            .returning(subscriptions)
        )
    ).one()
    await records.event(connection, after.event, "subscription", row)
    actor, by = actor_and_details(operator, "ops")
    return [
        records.audit_values(
            merchant_id=row.merchant_id,
            actor=actor,
            action="subscription.status",
            object_id=row.id,
            result=row.status,
            job_id=job.id,
            **by,
        )
    ]


async def _job_of(connection, letter: Row) -> Row | None:
    """The job the letter names, locked (None: it names none, or one that does not exist)."""
    if not letter.job_id:
        return None
    return (
        await connection.execute(
            select(rebill_jobs).where(rebill_jobs.c.id == letter.job_id).with_for_update()
        )
    ).first()
