"""gRPC transport of the operators' ReconciliationService: callers must present a service
token of the `ops` identity (`paymesh ops-token`) or the back office's (`backoffice`)."""

from __future__ import annotations

from datetime import UTC

import grpc

from gateway_svc.domain.reconciliation import Kind, MismatchState
from gateway_svc.reconciliation.runner import Reconciler, RunReport, Who
from paymesh.gateway.v1 import reconciliation_pb2 as pb2
from paymesh.gateway.v1 import reconciliation_pb2_grpc as pb2_grpc
from paymesh.platform.callers import Callers
from paymesh.platform.errors import InvalidArgument
from paymesh.platform.operators import ADMIN_IDENTITIES
from paymesh.platform.wire import timestamp

KINDS = {kind: getattr(pb2, f"MISMATCH_KIND_{kind.name}") for kind in Kind}
STATES = {state: getattr(pb2, f"MISMATCH_STATE_{state.name}") for state in MismatchState}
RESOLUTIONS = {
    pb2.RESOLUTION_RESOLVED: MismatchState.RESOLVED,
    pb2.RESOLUTION_IGNORED: MismatchState.IGNORED,
}
_MAX_TEXT = 1000


def mismatch_message(row) -> pb2.Mismatch:
    return pb2.Mismatch(
        id=row.id,
        psp=row.psp,
        reference=row.reference,
        kind=KINDS[Kind(row.kind)],
        state=STATES[MismatchState(row.state)],
        object_type=row.object_type,
        payment_intent=row.payment_intent or "",
        psp_amount=row.psp_amount,
        ledger_amount=row.ledger_amount,
        psp_currency=row.psp_currency,
        ledger_currency=row.ledger_currency,
        psp_status=row.psp_status,
        ledger_status=row.ledger_status,
        run_id=row.run_id,
        found=timestamp(row.found_at),
        resolved=timestamp(row.resolved_at),
        resolved_by=row.resolved_by or "",
        note=row.note or "",
    )


def report_message(report: RunReport) -> pb2.RunReconciliationResponse:
    return pb2.RunReconciliationResponse(
        run_id=report.run_id,
        psp=report.psp,
        records_checked=report.records_checked,
        new_mismatches=report.new_mismatches,
        mismatches=[mismatch_message(row) for row in report.mismatches],
        **{"from": timestamp(report.start), "to": timestamp(report.end)},
    )


def _short(name: str, value: str) -> str:
    if len(value) > _MAX_TEXT:
        raise InvalidArgument.for_field(name, "too_long", f"at most {_MAX_TEXT} characters")
    return value


class ReconciliationServicer(pb2_grpc.ReconciliationServiceServicer):
    def __init__(self, reconciler: Reconciler, callers: Callers):
        self._reconciler = reconciler
        self._callers = callers

    def _operator(self, context: grpc.aio.ServicerContext, request) -> Who:
        identity = self._callers.service(context, allowed=ADMIN_IDENTITIES)
        return Who(
            identity.name,
            _short("operator", request.operator),
            _short("reason", getattr(request, "reason", "")),
        )

    async def RunReconciliation(self, request, context):
        who = self._operator(context, request)
        start = request.HasField("from") and getattr(request, "from").ToDatetime(tzinfo=UTC)
        end = request.HasField("to") and request.to.ToDatetime(tzinfo=UTC)
        report = await self._reconciler.run(request.psp, start or None, end or None, who)
        return report_message(report)

    async def ListMismatches(self, request, context):
        self._callers.service(context, allowed=ADMIN_IDENTITIES)
        limit = request.limit or 20
        if not 1 <= limit <= 100:
            raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
        state = next((s for s, v in STATES.items() if v == request.state), "")
        kind = next((k for k, v in KINDS.items() if v == request.kind), "")
        rows, has_more = await self._reconciler.store.mismatches(
            state, kind, request.psp, limit, request.starting_after
        )
        return pb2.ListMismatchesResponse(
            mismatches=[mismatch_message(row) for row in rows], has_more=has_more
        )

    async def ResolveMismatch(self, request, context):
        who = self._operator(context, request)
        resolution = RESOLUTIONS.get(request.resolution)
        if resolution is None:
            raise InvalidArgument.for_field(
                "resolution", "invalid_value", "resolution must be resolved or ignored"
            )
        row = await self._reconciler.resolve(
            request.id, resolution, _short("note", request.note), who
        )
        return pb2.ResolveMismatchResponse(mismatch=mismatch_message(row))
