"""One contract, two dead-letter rooms: what operators do with `rebill.dead` (retry, discard)
runs against the PostgreSQL `DeadLetters` (tests/integration/test_rebill_job_store_contract.py)
and its in-memory twin (tests/unit/test_rebill_job_store.py). The arena is the job store's
(tests/support/job_store_contract.py) with `letters` beside its store."""

from __future__ import annotations

import json
from datetime import timedelta

import pika
import pytest

from paymesh.platform.amqp_consumer import Delivery
from paymesh.platform.problems import FailedPrecondition, NotFound
from rebill_svc.domain.dunning import Outcome, RetryAt
from rebill_svc.domain.jobs import DeadLetterStatus, JobStatus
from rebill_svc.domain.subscriptions import Status, after_attempt
from tests.support.job_store_contract import Arena, one_queued_job, settle

QUEUE = "rebill.monthly"


async def letter(arena: Arena, job_id: str | None, body: bytes | None = None) -> str:
    """A message naming `job_id` (or `body` as it came) that died on rebill.monthly."""
    message = (
        body
        or json.dumps(
            {
                "type": "rebill_job.monthly",
                "data": {"object_type": "rebill_job", "object_id": job_id},
            }
        ).encode()
    )
    before = {d.id for d in await arena.letters.list(DeadLetterStatus.DEAD, 100)}
    headers = {"x-first-death-queue": QUEUE, "x-first-death-reason": "rejected"}
    delivery = Delivery("rebill.dead", message, pika.BasicProperties(headers=headers), False)
    await arena.letters.receive(delivery)
    [new] = [d for d in await arena.letters.list(DeadLetterStatus.DEAD, 100) if d.id not in before]
    assert (new.queue, new.reason, new.job_id, new.body) == (
        QUEUE,
        "rejected",
        job_id,
        message.decode(),
    )
    return new.id


async def a_letter_naming_no_job_cannot_be_retried_and_is_discarded(arena: Arena) -> None:
    dead = await letter(arena, None, b"{not json")

    with pytest.raises(FailedPrecondition) as refused:
        await arena.letters.retry(dead)
    assert refused.value.reason == "nothing_to_retry"
    assert (await arena.letters.discard(dead)).status == DeadLetterStatus.DISCARDED
    with pytest.raises(NotFound):
        await arena.letters.retry("dl_missing")


async def a_retried_letter_hands_its_waiting_job_to_the_workers_again_once(arena: Arena) -> None:
    _, job = await one_queued_job(arena)
    dead = await letter(arena, job)

    retried = await arena.letters.retry(dead)
    assert (retried.status, retried.job_id) == (DeadLetterStatus.RETRIED, job)
    assert arena.messages(job) == 2
    assert arena.audits(job)[-1] == ("dead_letter.retry", JobStatus.QUEUED)
    with pytest.raises(FailedPrecondition) as again:
        await arena.letters.retry(dead)
    assert again.value.reason == "dead_letter_resolved"
    assert arena.messages(job) == 2
    assert dead in {d.id for d in await arena.letters.list(DeadLetterStatus.RETRIED, 100)}


async def a_discarded_letter_settles_its_unstarted_job_as_not_charged(arena: Arena) -> None:
    subscription, job = await one_queued_job(arena)
    dead = await letter(arena, job)

    assert (await arena.letters.discard(dead)).status == DeadLetterStatus.DISCARDED
    assert arena.job(job) == (JobStatus.FAILED, 1, None)
    assert arena.events(job) == ["rebill.failed"]
    assert arena.audits(job)[-1] == ("dead_letter.discard", JobStatus.FAILED)
    assert arena.attempts(job) == []
    assert arena.subscription_status(subscription) == Status.ACTIVE
    await arena.pass_time(0.6)
    await arena.store.reclaim_stale(10, requeue_after=0.3)  # no sweep picks it up again
    assert (arena.job(job)[0], arena.messages(job)) == (JobStatus.FAILED, 1)
    assert await arena.store.claim(job, "worker-1", 30) is None
    with pytest.raises(FailedPrecondition):
        await arena.letters.retry(dead)


async def a_letter_whose_jobs_attempt_started_cannot_be_discarded(arena: Arena) -> None:
    """The attempt may have charged; only a retry finishes it under its key."""
    _, job = await one_queued_job(arena)
    assert await arena.store.claim(job, "worker-dead", 0.3) is not None
    dead = await letter(arena, job)

    with pytest.raises(FailedPrecondition) as refused:
        await arena.letters.discard(dead)
    assert refused.value.reason == "attempt_started"
    assert dead in [d.id for d in await arena.letters.list(DeadLetterStatus.DEAD, 100)]
    assert (arena.job(job)[0], arena.attempts(job)) == (JobStatus.RUNNING, [])


async def discarding_a_dunning_retrys_letter_gives_the_period_up_as_the_policy_says(
    arena: Arena,
) -> None:
    """The retry's message died; once it is discarded nothing can collect the period, so
    the subscription ends as the merchant's policy says (unpaid by default) instead of
    staying past_due."""
    subscription, job = await one_queued_job(arena)
    claimed = await arena.store.claim(job, "worker-1", 30)
    retry = after_attempt(RetryAt(2, arena.now() - timedelta(seconds=1)), Status.ACTIVE)
    await settle(arena, claimed, "worker-1", Outcome.DECLINED_SOFT, retry)
    assert await arena.store.queue_due_retries(10) >= 1
    dead = await letter(arena, job)

    assert (await arena.letters.discard(dead)).status == DeadLetterStatus.DISCARDED
    assert arena.job(job)[:2] == (JobStatus.FAILED, 2)
    assert arena.subscription_status(subscription) == Status.UNPAID
    assert arena.next_attempt_at(subscription) is None
    assert arena.events(subscription)[-1] == "subscription.updated"
    assert arena.audits(subscription)[-1] == ("subscription.status", Status.UNPAID)
    assert arena.audits(job)[-1] == ("dead_letter.discard", JobStatus.FAILED)


async def an_operators_retry_and_discard_are_audited_under_their_email(arena: Arena) -> None:
    _, retried_job = await one_queued_job(arena)
    _, discarded_job = await one_queued_job(arena)
    retried = await letter(arena, retried_job)
    discarded = await letter(arena, discarded_job)

    await arena.letters.retry(retried, operator="ann@example.com")
    await arena.letters.discard(discarded, operator="bob@example.com")
    assert arena.actors(retried_job)[-1] == ("operator", "ann@example.com")
    assert arena.actors(discarded_job)[-1] == ("operator", "bob@example.com")
    # Without an operator's email, the action is the `ops` identity's, as before.
    _, job = await one_queued_job(arena)
    await arena.letters.retry(await letter(arena, job))
    assert arena.actors(job)[-1] == ("ops", None)


SCENARIOS = (
    an_operators_retry_and_discard_are_audited_under_their_email,
    a_letter_naming_no_job_cannot_be_retried_and_is_discarded,
    a_retried_letter_hands_its_waiting_job_to_the_workers_again_once,
    a_discarded_letter_settles_its_unstarted_job_as_not_charged,
    a_letter_whose_jobs_attempt_started_cannot_be_discarded,
    discarding_a_dunning_retrys_letter_gives_the_period_up_as_the_policy_says,
)
