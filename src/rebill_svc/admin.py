"""gRPC transport of the operators' RebillAdminService: callers must present a service token
of the `ops` identity (`paymesh ops-token`) or the back office's (`backoffice`)."""

from __future__ import annotations

import json
from datetime import timedelta

import grpc
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.audit_details import read_details
from paymesh.platform.callers import Callers
from paymesh.platform.db import autocommit
from paymesh.platform.errors import InvalidArgument
from paymesh.platform.operators import ADMIN_IDENTITIES, OPERATOR_ACTOR, filter_id, operator_email
from paymesh.platform.wire import require_id, required_datetime, timestamp
from paymesh.rebill.v1 import rebill_admin_pb2 as admin_pb2
from paymesh.rebill.v1 import rebill_admin_pb2_grpc as admin_pb2_grpc
from rebill_svc import records
from rebill_svc.dead_letters import DeadLetters
from rebill_svc.domain.dunning import DunningState, FinalStatus, RetryPolicy
from rebill_svc.domain.jobs import DeadLetterStatus
from rebill_svc.domain.search import parse_query
from rebill_svc.domain.subscriptions import Status
from rebill_svc.jobs.postgres import policy_of
from rebill_svc.oversight import SubscriptionOversight, SubscriptionSearch
from rebill_svc.servicer import renewal_message, subscription_message
from rebill_svc.tables import retry_policies

MAX_RETRIES, MAX_RETRY_DAY = 10, 60
SEARCH_LIMIT = 25
MAX_STATS_RANGE = timedelta(days=400)
STATUSES = {s.value for s in Status}


def letter_message(row) -> admin_pb2.DeadLetter:
    return admin_pb2.DeadLetter(
        id=row.id,
        queue=row.queue,
        job_id=row.job_id or "",
        reason=row.reason,
        body=row.body,
        status=row.status,
        received=timestamp(row.received_at),
    )


def policy_message(merchant_id: str, policy: RetryPolicy) -> admin_pb2.RetryPolicy:
    return admin_pb2.RetryPolicy(
        merchant_id=merchant_id,
        retry_after_days=[int(d.total_seconds() // 86400) for d in policy.retry_after],
        final_status=policy.final_status.value,
    )


def validated_policy(policy: admin_pb2.RetryPolicy) -> tuple[list[int], str]:
    days = list(policy.retry_after_days)
    violations = []
    if (
        len(days) > MAX_RETRIES
        or any(not 1 <= d <= MAX_RETRY_DAY for d in days)
        or days != sorted(set(days))
    ):
        violations.append(
            (
                "policy.retry_after_days",
                f"at most {MAX_RETRIES} strictly increasing days from 1 to {MAX_RETRY_DAY}",
            )
        )
    if policy.final_status not in {s.value for s in FinalStatus}:
        violations.append(("policy.final_status", "unpaid or canceled"))
    if violations:
        field, description = violations[0]
        raise InvalidArgument.for_field(field, "invalid_retry_policy", description)
    return days, policy.final_status


def summary_message(row) -> admin_pb2.SubscriptionSummary:
    return admin_pb2.SubscriptionSummary(
        subscription=subscription_message(row), merchant_id=row.merchant_id
    )


def audit_message(row) -> admin_pb2.RebillAuditEntry:
    details = read_details(row.details, row.details_z)
    operator = details.get("operator", "") if isinstance(details, dict) else ""
    return admin_pb2.RebillAuditEntry(
        at=timestamp(row.at),
        actor=row.actor,
        action=row.action,
        object_id=row.object_id,
        result=row.result,
        details_json=json.dumps(details, sort_keys=True),
        operator=operator if row.actor == OPERATOR_ACTOR else "",
    )


def dunning_message(state: DunningState) -> admin_pb2.Dunning:
    return admin_pb2.Dunning(
        retry_after_days=state.retry_after_days,
        attempts_made=state.attempts_made,
        next_attempt_at=timestamp(state.next_attempt_at),
        final_status=state.final_status.value,
    )


def search_of(request: admin_pb2.SearchSubscriptionsRequest) -> SubscriptionSearch:
    limit = request.limit or SEARCH_LIMIT
    if not 1 <= limit <= 100:
        raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
    if request.status and request.status not in STATUSES:
        raise InvalidArgument.for_field(
            "status", "invalid_status", "status must be one of " + ", ".join(sorted(STATUSES))
        )
    return SubscriptionSearch(
        q=parse_query(request.q),
        merchant_id=filter_id(request.merchant_id, "acct_", "merchant_id"),
        status=request.status,
        limit=limit,
        starting_after=filter_id(request.starting_after, "sub_", "starting_after"),
    )


class RebillAdminServicer(admin_pb2_grpc.RebillAdminServiceServicer):
    def __init__(
        self,
        engine: AsyncEngine,
        letters: DeadLetters,
        callers: Callers,
        oversight: SubscriptionOversight,
    ):
        self._engine = engine
        self._reads = autocommit(engine)
        self._letters = letters
        self._callers = callers
        self._oversight = oversight

    def _operator(self, context: grpc.aio.ServicerContext) -> None:
        self._callers.service(context, allowed=ADMIN_IDENTITIES)

    async def SetRetryPolicy(self, request, context):
        self._operator(context)
        merchant_id = require_id(request.policy.merchant_id, "acct_", "merchant", "merchant_id")
        days, final_status = validated_policy(request.policy)
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(retry_policies)
                .values(merchant_id=merchant_id, retry_after_days=days, final_status=final_status)
                .on_conflict_do_update(
                    index_elements=[retry_policies.c.merchant_id],
                    set_={
                        "retry_after_days": days,
                        "final_status": final_status,
                        "updated_at": func.now(),
                    },
                )
            )
            await records.audit(
                connection,
                merchant_id=merchant_id,
                actor="ops",
                action="retry_policy.set",
                object_id=merchant_id,
                result=final_status,
                retry_after_days=days,
            )
            policy = await policy_of(connection, merchant_id)
        return policy_message(merchant_id, policy)

    async def GetRetryPolicy(self, request, context):
        self._operator(context)
        merchant_id = require_id(request.merchant_id, "acct_", "merchant", "merchant_id")
        async with self._reads.connect() as connection:
            policy = await policy_of(connection, merchant_id)
        return policy_message(merchant_id, policy)

    async def ListDeadLetters(self, request, context):
        self._operator(context)
        status = request.status or DeadLetterStatus.DEAD
        if status not in tuple(DeadLetterStatus):
            raise InvalidArgument.for_field(
                "status", "invalid_status", "dead, retried or discarded"
            )
        limit = request.limit or 50
        if not 1 <= limit <= 100:
            raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
        rows = await self._letters.list(status, limit)
        return admin_pb2.ListDeadLettersResponse(data=[letter_message(r) for r in rows])

    async def RetryDeadLetter(self, request, context):
        self._operator(context)
        letter_id = require_id(request.id, "dl_", "dead letter")
        operator = operator_email(request.operator, required=False)
        return letter_message(await self._letters.retry(letter_id, operator))

    async def DiscardDeadLetter(self, request, context):
        self._operator(context)
        letter_id = require_id(request.id, "dl_", "dead letter")
        operator = operator_email(request.operator, required=False)
        return letter_message(await self._letters.discard(letter_id, operator))

    async def SearchSubscriptions(self, request, context):
        self._operator(context)
        rows, has_more = await self._oversight.search(search_of(request))
        return admin_pb2.SearchSubscriptionsResponse(
            data=[summary_message(r) for r in rows], has_more=has_more
        )

    async def GetSubscriptionDetail(self, request, context):
        self._operator(context)
        story = await self._oversight.story(require_id(request.id, "sub_", "subscription"))
        broken = story.chain_break
        return admin_pb2.SubscriptionDetail(
            summary=summary_message(story.subscription),
            renewals=[renewal_message(r) for r in story.renewals],
            dunning=dunning_message(story.dunning),
            timeline=[audit_message(r) for r in story.timeline],
            chain_verified=broken is None,
            chain_problem=f"row {broken.row_id}: {broken.problem}" if broken else "",
        )

    async def GetRecoveryStats(self, request, context):
        self._operator(context)
        start = required_datetime(request, "from")
        end = required_datetime(request, "to")
        if not start < end <= start + MAX_STATS_RANGE:
            raise InvalidArgument.for_field(
                "to", "invalid_range", "to must be after from, at most 400 days later"
            )
        rows = await self._oversight.recovery(start, end)
        return admin_pb2.RecoveryStats(
            days=[
                admin_pb2.DailyRecovery(
                    day=r.day,
                    paid_first_time=r.paid_first_time,
                    declined=r.declined,
                    recovered=r.recovered,
                )
                for r in rows
            ]
        )
