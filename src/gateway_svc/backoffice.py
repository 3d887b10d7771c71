"""gRPC transport of the back office's BackOfficeService: callers must present a service token
of the `backoffice` identity (the console) or `ops` (an operator's grpcurl). Every merchant's
payments are read here; an operator's refund takes the merchant's path (payments.refund)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import grpc
import structlog

from gateway_svc.domain import backoffice as rules
from gateway_svc.payments import refund
from gateway_svc.payments.context import Payments
from gateway_svc.repository.backoffice import BackOfficeRepository
from gateway_svc.repository.rows import to_dispute, to_intent, to_refund
from gateway_svc.servicer import (
    dispute_message,
    key_ref,
    payment_intent_message,
    refund_message,
)
from paymesh.gateway.v1 import backoffice_pb2 as pb2
from paymesh.gateway.v1 import backoffice_pb2_grpc as pb2_grpc
from paymesh.platform.audit_chain import Scope, check_chains
from paymesh.platform.audit_keys import AuditKeys
from paymesh.platform.callers import Callers, Merchant
from paymesh.platform.idempotency.keys import checked_key
from paymesh.platform.idempotency.store import Idempotency, replayed_error
from paymesh.platform.operators import ADMIN_IDENTITIES
from paymesh.platform.tracing import annotate_object
from paymesh.platform.wire import optional_datetime, require_id, timestamp
from paymesh.vault.v1 import vault_pb2

# The owner of the back office's idempotency keys: not a merchant id (those are `acct_…`), so
# an operator's key can never be a merchant's.
OPERATOR_KEYS = Merchant("backoffice", False)
AUDIT_TABLE = "gateway.payment_audit"


log = structlog.get_logger(__name__)


class CardSummaries(Protocol):
    """The vault's masked cards (VaultClient.card_summaries)."""

    async def card_summaries(self, payment_methods: list[str]) -> list[vault_pb2.CardSummary]: ...


def summary_message(row: Any, card: vault_pb2.CardSummary | None = None) -> pb2.PaymentSummary:
    """A payment with its card masked when the vault told it (the gateway holds no card
    data): brand, last 4 and fingerprint, or empty."""
    summary = pb2.PaymentSummary(
        payment_intent=payment_intent_message(to_intent(row)),
        merchant_id=row.merchant_id,
        merchant_name=row.merchant_name or "",
    )
    masked_card(summary, card)
    return summary


def masked_card(summary: pb2.PaymentSummary, card: vault_pb2.CardSummary | None) -> None:
    if card is not None:
        summary.card_brand = card.brand
        summary.card_last4 = card.last4
        summary.card_fingerprint = card.fingerprint


def audit_message(row: rules.AuditRow) -> pb2.AuditEntry:
    return pb2.AuditEntry(
        at=timestamp(row.at),
        actor=row.actor,
        action=row.action,
        object_id=row.object_id,
        result=row.result,
        details_json=json.dumps(row.details, sort_keys=True, default=str),
        operator=rules.operator_of(row.actor, row.details),
    )


def attempt_message(attempt: rules.Attempt) -> pb2.PspAttempt:
    return pb2.PspAttempt(
        key=attempt.key,
        psp=attempt.psp,
        operation=attempt.operation,
        outcome=attempt.outcome,
        psp_reference=attempt.psp_reference,
        trace_id=attempt.trace_id,
        at=timestamp(attempt.at),
        code=attempt.code,
    )


def movement_message(m: rules.Movement) -> pb2.MoneyMovement:
    return pb2.MoneyMovement(
        type=m.type,
        id=m.id,
        payment_intent=m.payment_intent,
        merchant_id=m.merchant_id,
        amount=m.amount,
        currency=m.currency,
        psp=m.psp,
        psp_reference=m.psp_reference,
        fee=m.fee,
        settled=timestamp(m.settled),
    )


class BackOfficeServicer(pb2_grpc.BackOfficeServiceServicer):
    def __init__(
        self,
        repository: BackOfficeRepository,
        payments: Payments,
        idempotency: Idempotency,
        callers: Callers,
        audit_keys: AuditKeys | None,
        cards: CardSummaries,
    ):
        self._repository = repository
        self._payments = payments
        self._idempotency = idempotency
        self._callers = callers
        self._audit_keys = audit_keys
        self._cards = cards

    def _caller(self, context: grpc.aio.ServicerContext) -> None:
        self._callers.service(context, allowed=ADMIN_IDENTITIES)

    async def _cards_of(self, rows: list[Any]) -> dict[str, vault_pb2.CardSummary]:
        """The masked cards of the rows' payment methods, in ONE call to the vault; none when
        the vault fails (the page shows without them)."""
        wanted = rules.cards_to_look_up(row.payment_method for row in rows)
        if not wanted:
            return {}
        try:
            cards = await self._cards.card_summaries(wanted)
        except grpc.RpcError as error:
            code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "unknown"
            log.warning("card_summaries_unavailable", code=code, asked=len(wanted))
            return {}
        return {card.payment_method: card for card in cards}

    async def SearchPayments(self, request, context):
        self._caller(context)
        search = rules.payment_search(
            q=request.q,
            merchant_id=request.merchant_id,
            status=request.status,
            psp=request.psp,
            amount_min=request.amount_min,
            amount_max=request.amount_max,
            created_from=optional_datetime(request, "created_from"),
            created_to=optional_datetime(request, "created_to"),
            limit=request.limit,
            starting_after=request.starting_after,
        )
        rows, has_more = await self._repository.search(search)
        cards = await self._cards_of(rows)
        return pb2.SearchPaymentsResponse(
            data=[summary_message(row, cards.get(row.payment_method or "")) for row in rows],
            has_more=has_more,
        )

    async def GetPaymentDetail(self, request, context):
        self._caller(context)
        intent_id = require_id(request.id, "pi_", "payment_intent")
        annotate_object(intent_id)
        story = await self._repository.story(intent_id)
        intent = to_intent(story.intent)
        # The chains its rows are in, each whole (a merchant's rows are spread over several,
        # one per transaction): a payment's page costs its share of the merchant's history.
        chains = sorted({row.chain for row in story.audit})
        # The vault's answer is awaited while the chains are checked (neither needs the other).
        report, cards = await asyncio.gather(
            check_chains(
                self._repository.engine,
                AUDIT_TABLE,
                self._audit_keys,
                Scope(intent.merchant_id, chains),
            ),
            self._cards_of([story.intent]),
        )
        chain = pb2.ChainCheck(verified=report.broken is None, rows=report.rows)
        if report.broken is not None:
            chain.problem = f"row {report.broken.row_id}: {report.broken.problem}"
        attempts = rules.psp_attempts(
            [row for row in story.audit if row.object_id.startswith(("pi_", "re_"))],
            intent.psp or "",
            intent.psp_reference or "",
            intent.attempt_key or "",
            {row.id: row.psp_reference or "" for row in story.refunds},
        )
        return pb2.PaymentDetail(
            summary=summary_message(story.intent, cards.get(story.intent.payment_method or "")),
            timeline=[audit_message(row) for row in story.audit],
            chain=chain,
            attempts=[attempt_message(attempt) for attempt in attempts],
            refunds=[refund_message(to_refund(row)) for row in story.refunds],
            disputes=[dispute_message(to_dispute(row)) for row in story.disputes],
        )

    async def RefundPayment(self, request, context):
        """CreateRefund's use case under the operator's word: the same rules and errors; the
        key is the back office's own (see OPERATOR_KEYS), claimed before anything else."""
        self._caller(context)
        rules.operator_request(request.operator, request.reason, request.idempotency_key)
        key = checked_key(request.idempotency_key)
        claim = await self._idempotency.claim(OPERATOR_KEYS, key, "RefundPayment", request)
        if claim.answered:
            stored = claim.replay
            if stored is not None and stored.error is not None:
                raise replayed_error(stored)
            object_id = claim.replay_object or claim.awaiting_outcome or ""
            return refund_message(await self._payments.repository.refund(object_id))
        try:
            intent_id = require_id(
                request.payment_intent, "pi_", "payment_intent", "payment_intent"
            )
            structlog.contextvars.bind_contextvars(correlation_id=intent_id)
            annotate_object(intent_id)
            intent = await self._payments.repository.intent(intent_id)
            made = await refund.refund(
                self._payments,
                Merchant(intent.merchant_id, intent.livemode),
                intent_id,
                request.amount,
                "",  # the refund's reason is one of Stripe's words; the operator's is audited
                key_ref(claim),
                refund.Requester(
                    "operator", {"operator": request.operator, "reason": request.reason}
                ),
            )
        except Exception as error:
            await self._idempotency.settle_error(claim, error)
            raise
        # The refund's own statements settle only its merchant's keys: this key is the back
        # office's, settled here (a retry answers with the refund as it is then).
        await self._idempotency.settle(claim, made.id, None)
        return refund_message(made)

    async def SearchDisputes(self, request, context):
        self._caller(context)
        statuses = rules.dispute_statuses(request.status)
        rules.psp_filter(request.psp)
        limit = rules.page_size(request.limit, rules.DEFAULT_DISPUTE_LIMIT)
        rows, has_more = await self._repository.disputes(
            statuses, request.merchant_id, request.psp, limit, request.starting_after
        )
        return pb2.SearchDisputesResponse(
            data=[
                pb2.DisputeSummary(
                    dispute=dispute_message(to_dispute(row)),
                    merchant_id=row.merchant_id,
                    evidence_due_by=timestamp(row.evidence_due_by),
                )
                for row in rows
            ],
            has_more=has_more,
        )

    async def ExportMoneyMovements(self, request, context):
        self._caller(context)
        start, end = rules.period(
            optional_datetime(request, "from"), optional_datetime(request, "to")
        )
        movements = await self._repository.movements(start, end, request.merchant_id)
        return pb2.ExportMoneyMovementsResponse(data=[movement_message(m) for m in movements])

    async def GetPaymentStats(self, request, context):
        self._caller(context)
        start, end = rules.period(
            optional_datetime(request, "from"), optional_datetime(request, "to")
        )
        daily, declines = await self._repository.stats(start, end)
        return pb2.PaymentStats(
            days=[
                pb2.DailyPspStats(
                    day=figure.day,
                    psp=figure.psp,
                    attempted=figure.attempted,
                    succeeded=figure.succeeded,
                    volume=figure.volume,
                )
                for figure in daily
            ],
            declines=[pb2.DeclineCount(code=code, count=count) for code, count in declines],
        )
