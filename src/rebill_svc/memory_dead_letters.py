"""The in-memory twin of `DeadLetters`, over the in-memory job store: the same decisions
(rebill_svc.domain.jobs: what a retry publishes, what a discard drops or refuses, dunning
given up as the merchant's policy says) and the same writes, in dictionaries.
tests/support/dead_letter_contract.py holds both to one suite."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from paymesh.platform.amqp_consumer import Delivery, Verdict
from paymesh.platform.ids import new_id
from paymesh.platform.operators import actor_and_details
from paymesh.platform.problems import FailedPrecondition, NotFound
from rebill_svc.dead_letters import MAX_BODY, death_of
from rebill_svc.domain.dunning import GiveUp, RetryPolicy
from rebill_svc.domain.jobs import (
    JOB_EVENTS,
    AttemptStarted,
    DeadLetterStatus,
    discard_plan,
    republished_on_retry,
)
from rebill_svc.domain.subscriptions import Status, after_attempt
from rebill_svc.jobs.memory import InMemoryJobStore, StoredJob
from rebill_svc.topology import job_id_of


@dataclass(frozen=True)
class DeadLetter:
    id: str
    queue: str
    job_id: str | None
    reason: str
    body: str
    status: str
    received_at: datetime
    resolved_at: datetime | None = None


class InMemoryDeadLetters:
    def __init__(self, jobs: InMemoryJobStore):
        self.jobs = jobs
        self.letters: dict[str, DeadLetter] = {}

    async def receive(self, delivery: Delivery) -> Verdict:
        queue, reason = death_of(delivery)
        letter = DeadLetter(
            id=new_id("dl_"),
            queue=queue,
            job_id=job_id_of(delivery.body),
            reason=reason,
            body=delivery.body[:MAX_BODY].decode("utf-8", "replace"),
            status=DeadLetterStatus.DEAD,
            received_at=self.jobs.now,
        )
        self.letters[letter.id] = letter
        return Verdict.ACK

    async def list(self, status: str, limit: int) -> list[DeadLetter]:
        found = [letter for letter in self.letters.values() if letter.status == status]
        return sorted(found, key=lambda letter: (letter.received_at, letter.id))[:limit]

    async def retry(self, letter_id: str, operator: str = "") -> DeadLetter:
        letter = self._dead(letter_id)
        job = self._job_of(letter)
        if job is None:
            raise FailedPrecondition(
                "this message names no job to retry; discard it", reason="nothing_to_retry"
            )
        if republished_on_retry(job.status):
            self.jobs._publish(job)
        actor, by = actor_and_details(operator, "ops")
        self.jobs._audit(job.id, "dead_letter.retry", job.status, actor=actor, **by)
        return self._resolve(letter, DeadLetterStatus.RETRIED)

    async def discard(self, letter_id: str, operator: str = "") -> DeadLetter:
        letter = self._dead(letter_id)
        job = self._job_of(letter)
        if job is not None:
            self._drop_unstarted(job, operator)
        return self._resolve(letter, DeadLetterStatus.DISCARDED)

    def _drop_unstarted(self, job: StoredJob, operator: str) -> None:
        try:
            action = discard_plan(job.status, job.attempt_runs)
        except AttemptStarted:
            raise FailedPrecondition(
                "this job's attempt was started and may have charged; retry the letter"
                " so that it finishes",
                reason="attempt_started",
            ) from None
        if action is not None:
            self.jobs._move(job, action)
            self.jobs._event(JOB_EVENTS[job.status], job.id)
            self._give_up_dunning(job, operator)
        actor, by = actor_and_details(operator, "ops")
        self.jobs._audit(job.id, "dead_letter.discard", job.status, actor=actor, **by)

    def _give_up_dunning(self, job: StoredJob, operator: str) -> None:
        subscription = self.jobs.subscriptions[job.subscription_id]
        if subscription.status != Status.PAST_DUE:
            return
        policy = self.jobs.policies.get(job.merchant_id, RetryPolicy())
        after = after_attempt(GiveUp(policy.final_status), subscription.status)
        assert after.subscription_status is not None and after.event is not None
        subscription.status = after.subscription_status
        subscription.next_attempt_at = None
        if subscription.status == Status.CANCELED:
            subscription.canceled_at = self.jobs.now
        self.jobs._event(after.event, subscription.id)
        actor, by = actor_and_details(operator, "ops")
        self.jobs._audit(
            subscription.id, "subscription.status", subscription.status, actor=actor, **by
        )

    def _dead(self, letter_id: str) -> DeadLetter:
        letter = self.letters.get(letter_id)
        if letter is None:
            raise NotFound("no such dead letter", reason="resource_missing")
        if letter.status != DeadLetterStatus.DEAD:
            raise FailedPrecondition(
                f"the dead letter was already {letter.status}", reason="dead_letter_resolved"
            )
        return letter

    def _job_of(self, letter: DeadLetter) -> StoredJob | None:
        return self.jobs.jobs.get(letter.job_id) if letter.job_id else None

    def _resolve(self, letter: DeadLetter, status: DeadLetterStatus) -> DeadLetter:
        resolved = replace(letter, status=status, resolved_at=self.jobs.now)
        self.letters[letter.id] = resolved
        return resolved
