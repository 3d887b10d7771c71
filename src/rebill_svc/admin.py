"""gRPC transport of the operators' RebillAdminService: callers must present a service token
of the `ops` identity (`paymesh ops-token`)."""

from __future__ import annotations

import grpc
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Callers
from paymesh.platform.db import autocommit
from paymesh.platform.errors import InvalidArgument
from paymesh.platform.wire import require_id, timestamp
from paymesh.rebill.v1 import rebill_admin_pb2 as admin_pb2
from paymesh.rebill.v1 import rebill_admin_pb2_grpc as admin_pb2_grpc
from rebill_svc import records
from rebill_svc.dead_letters import DeadLetters
from rebill_svc.domain.dunning import FinalStatus, RetryPolicy
from rebill_svc.domain.jobs import DeadLetterStatus
from rebill_svc.jobs.postgres import policy_of
from rebill_svc.tables import retry_policies

MAX_RETRIES, MAX_RETRY_DAY = 10, 60


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


class RebillAdminServicer(admin_pb2_grpc.RebillAdminServiceServicer):
    def __init__(self, engine: AsyncEngine, letters: DeadLetters, callers: Callers):
        self._engine = engine
        self._reads = autocommit(engine)
        self._letters = letters
        self._callers = callers

    def _operator(self, context: grpc.aio.ServicerContext) -> None:
        self._callers.service(context, allowed={"ops"})

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
        return letter_message(
            await self._letters.retry(require_id(request.id, "dl_", "dead letter"))
        )

    async def DiscardDeadLetter(self, request, context):
        self._operator(context)
        return letter_message(
            await self._letters.discard(require_id(request.id, "dl_", "dead letter"))
        )
