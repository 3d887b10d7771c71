"""The back office's one way into the mesh: the calls its pages make, over the services'
generated gRPC stubs with the `backoffice` service token, answering plain values (records.py).
Any RPC failure becomes a MeshError, which the pages show as an "unavailable" panel or as the
action's refusal. Operator actions name the operator in the RPC's `operator` field.
memory_mesh.MemoryMesh is its in-memory twin."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from backoffice.records import (
    ApiKey,
    AuditEntry,
    DailyPsp,
    DailyRecovery,
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    Dispute,
    Merchant,
    MeshError,
    Mismatch,
    MoneyMovement,
    Page,
    Payment,
    PaymentDetail,
    PaymentFilters,
    PaymentStats,
    PspAttempt,
    Refund,
    Renewal,
    RolledKey,
    Subscription,
    SubscriptionDetail,
    SystemStatus,
)
from paymesh.gateway.v1 import (
    backoffice_pb2,
    backoffice_pb2_grpc,
    merchant_admin_pb2,
    merchant_admin_pb2_grpc,
    reconciliation_pb2,
    reconciliation_pb2_grpc,
)
from paymesh.platform.channels import service_channel
from paymesh.platform.service_auth import TokenIssuer
from paymesh.rebill.v1 import rebill_admin_pb2, rebill_admin_pb2_grpc
from paymesh.webhook.v1 import webhook_admin_pb2, webhook_admin_pb2_grpc

T = TypeVar("T")
BREAKER_STATES = {0: "closed", 1: "open", 2: "half-open"}
MISMATCH_KINDS = {
    "missing_in_ledger": reconciliation_pb2.MISMATCH_KIND_MISSING_IN_LEDGER,
    "missing_at_psp": reconciliation_pb2.MISMATCH_KIND_MISSING_AT_PSP,
    "amount_mismatch": reconciliation_pb2.MISMATCH_KIND_AMOUNT_MISMATCH,
    "currency_mismatch": reconciliation_pb2.MISMATCH_KIND_CURRENCY_MISMATCH,
    "status_mismatch": reconciliation_pb2.MISMATCH_KIND_STATUS_MISMATCH,
}
MISMATCH_STATES = {
    "open": reconciliation_pb2.MISMATCH_STATE_OPEN,
    "resolved": reconciliation_pb2.MISMATCH_STATE_RESOLVED,
    "ignored": reconciliation_pb2.MISMATCH_STATE_IGNORED,
}
RESOLUTIONS = {
    "resolved": reconciliation_pb2.RESOLUTION_RESOLVED,
    "ignored": reconciliation_pb2.RESOLUTION_IGNORED,
}


class Mesh(Protocol):
    """What the pages ask of the mesh (MeshClient, MemoryMesh)."""

    async def search_payments(self, filters: PaymentFilters) -> Page[Payment]: ...
    async def payment_detail(self, payment_id: str) -> PaymentDetail: ...
    async def deliveries_for_payment(self, payment_id: str) -> list[Delivery]: ...
    async def refund_payment(
        self, payment_id: str, amount: int, reason: str, operator: str, idempotency_key: str
    ) -> Refund: ...
    async def search_disputes(self, status: str, merchant_id: str, psp: str) -> list[Dispute]: ...
    async def export_movements(self, start: datetime, end: datetime) -> list[MoneyMovement]: ...
    async def payment_stats(self, start: datetime, end: datetime) -> PaymentStats: ...
    async def recovery_stats(self, start: datetime, end: datetime) -> list[DailyRecovery]: ...
    async def search_subscriptions(
        self, q: str, merchant_id: str, status: str
    ) -> Page[Subscription]: ...
    async def subscription_detail(self, subscription_id: str) -> SubscriptionDetail: ...
    async def mismatches(self, state: str, kind: str, psp: str) -> list[Mismatch]: ...
    async def resolve_mismatch(
        self, mismatch_id: str, resolution: str, note: str, operator: str
    ) -> Mismatch: ...
    async def dead_letters(self) -> list[DeadLetter]: ...
    async def retry_dead_letter(self, letter_id: str, operator: str) -> DeadLetter: ...
    async def discard_dead_letter(self, letter_id: str, operator: str) -> DeadLetter: ...
    async def dead_deliveries(self) -> list[Delivery]: ...
    async def retry_delivery(self, delivery_id: str, operator: str) -> Delivery: ...
    async def discard_delivery(self, delivery_id: str, operator: str) -> Delivery: ...
    async def merchants(self) -> list[Merchant]: ...
    async def roll_key(self, merchant_id: str, livemode: bool) -> RolledKey: ...
    async def revoke_key(self, merchant_id: str, api_key_id: str) -> None: ...
    async def set_routing(self, merchant_id: str, psps: list[str]) -> list[str]: ...
    async def system_status(self) -> SystemStatus: ...
    async def close(self) -> None: ...


def _at(ts: Timestamp) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _ts(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _payment(summary: Any) -> Payment:
    intent = summary.payment_intent
    return Payment(
        id=intent.id,
        merchant_id=summary.merchant_id,
        merchant_name=summary.merchant_name,
        amount=intent.amount,
        currency=intent.currency,
        status=intent.status,
        psp=intent.psp,
        card_brand=summary.card_brand,
        card_last4=summary.card_last4,
        card_fingerprint=summary.card_fingerprint,
        created=_at(intent.created),
        amount_refunded=intent.amount_refunded,
        decline_code=intent.last_payment_error.decline_code or intent.last_payment_error.code,
        livemode=intent.livemode,
    )


def _refund(refund: Any) -> Refund:
    return Refund(
        refund.id,
        refund.amount,
        refund.currency,
        refund.status,
        refund.reason,
        _at(refund.created),
    )


def _dispute(dispute: Any, merchant_id: str = "", due: Timestamp | None = None) -> Dispute:
    return Dispute(
        id=dispute.id,
        payment_intent=dispute.payment_intent,
        merchant_id=merchant_id,
        amount=dispute.amount,
        currency=dispute.currency,
        reason=dispute.reason,
        status=dispute.status,
        psp=dispute.psp,
        evidence_due_by=_at(due) if due is not None else None,
        created=_at(dispute.created),
    )


def _audit(entry: Any) -> AuditEntry:
    return AuditEntry(
        _at(entry.at),
        entry.actor,
        entry.action,
        entry.object_id,
        entry.result,
        entry.details_json,
        entry.operator,
    )


def _delivery(delivery: Any) -> Delivery:
    return Delivery(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        merchant_id=delivery.merchant_id,
        url=delivery.url,
        status=delivery.status,
        payment_intent=delivery.payment_intent,
        created=_at(delivery.created),
        attempts=[
            DeliveryAttempt(_at(a.at), a.status_code, a.duration_ms, a.error, a.outcome)
            for a in delivery.attempts
        ],
    )


def _subscription(summary: Any) -> Subscription:
    sub = summary.subscription
    return Subscription(
        id=sub.id,
        merchant_id=summary.merchant_id,
        amount=sub.amount,
        currency=sub.currency,
        interval=sub.interval,
        status=sub.status,
        payment_method=sub.payment_method,
        current_period_end=_at(sub.current_period_end),
        created=_at(sub.created),
    )


def _name(enum_value: int, table: Mapping[str, int]) -> str:
    return next((name for name, value in table.items() if value == enum_value), "unspecified")


def _mismatch(m: Any) -> Mismatch:
    return Mismatch(
        id=m.id,
        psp=m.psp,
        kind=_name(m.kind, MISMATCH_KINDS),
        state=_name(m.state, MISMATCH_STATES),
        reference=m.reference,
        object_type=m.object_type,
        payment_intent=m.payment_intent,
        psp_amount=m.psp_amount,
        ledger_amount=m.ledger_amount,
        psp_currency=m.psp_currency,
        ledger_currency=m.ledger_currency,
        psp_status=m.psp_status,
        ledger_status=m.ledger_status,
        found=_at(m.found),
        note=m.note,
        resolved_by=m.resolved_by,
    )


def _letter(letter: Any) -> DeadLetter:
    return DeadLetter(
        letter.id,
        letter.queue,
        letter.job_id,
        letter.reason,
        letter.body,
        letter.status,
        _at(letter.received),
    )


def _merchant(m: Any) -> Merchant:
    return Merchant(
        id=m.id,
        name=m.name,
        psp_routing=list(m.psp_routing),
        api_keys=[
            ApiKey(k.id, k.livemode, k.last4, _at(k.created), _at(k.revoked)) for k in m.api_keys
        ],
        created=_at(m.created),
    )


class MeshClient:
    """The real facade: one channel per service, opened on first use in the running loop."""

    def __init__(
        self,
        addresses: dict[str, str],
        issuer: TokenIssuer,
        metrics_urls: dict[str, str],
        timeout: float = 5.0,
    ):
        self._addresses = addresses
        self._issuer = issuer
        self._metrics_urls = metrics_urls
        self._timeout = timeout
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            self._channels[service] = service_channel(
                self._addresses[service], self._issuer, service
            )
        return self._channels[service]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def _call(self, name: str, method: Callable[..., Awaitable[T]], request: Any) -> T:
        try:
            return await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise MeshError(name, error.code().name, error.details() or "") from None

    def _backoffice(self) -> backoffice_pb2_grpc.BackOfficeServiceStub:
        return backoffice_pb2_grpc.BackOfficeServiceStub(self._channel("gateway"))

    def _rebill(self) -> rebill_admin_pb2_grpc.RebillAdminServiceStub:
        return rebill_admin_pb2_grpc.RebillAdminServiceStub(self._channel("rebill"))

    def _webhooks(self) -> webhook_admin_pb2_grpc.WebhookAdminServiceStub:
        return webhook_admin_pb2_grpc.WebhookAdminServiceStub(self._channel("webhook"))

    def _merchant_admin(self) -> merchant_admin_pb2_grpc.MerchantAdminServiceStub:
        return merchant_admin_pb2_grpc.MerchantAdminServiceStub(self._channel("gateway"))

    def _recon(self) -> reconciliation_pb2_grpc.ReconciliationServiceStub:
        return reconciliation_pb2_grpc.ReconciliationServiceStub(self._channel("gateway"))

    # Payments, disputes, exports, figures: gateway.v1.BackOfficeService.

    async def search_payments(self, filters: PaymentFilters) -> Page[Payment]:
        request = backoffice_pb2.SearchPaymentsRequest(
            q=filters.q,
            merchant_id=filters.merchant_id,
            status=filters.status,
            psp=filters.psp,
            amount_min=filters.amount_min,
            amount_max=filters.amount_max,
            limit=filters.limit,
            starting_after=filters.starting_after,
        )
        if filters.created_from:
            request.created_from.CopyFrom(_ts(filters.created_from))
        if filters.created_to:
            request.created_to.CopyFrom(_ts(filters.created_to))
        answer = await self._call("SearchPayments", self._backoffice().SearchPayments, request)
        return Page([_payment(s) for s in answer.data], answer.has_more)

    async def payment_detail(self, payment_id: str) -> PaymentDetail:
        answer = await self._call(
            "GetPaymentDetail",
            self._backoffice().GetPaymentDetail,
            backoffice_pb2.GetPaymentDetailRequest(id=payment_id),
        )
        return PaymentDetail(
            payment=_payment(answer.summary),
            timeline=[_audit(e) for e in answer.timeline],
            chain_verified=answer.chain.verified,
            chain_rows=answer.chain.rows,
            chain_problem=answer.chain.problem,
            attempts=[
                PspAttempt(
                    a.key,
                    a.psp,
                    a.operation,
                    a.outcome,
                    a.psp_reference,
                    a.trace_id,
                    a.code,
                    _at(a.at),
                )
                for a in answer.attempts
            ],
            refunds=[_refund(r) for r in answer.refunds],
            disputes=[_dispute(d, answer.summary.merchant_id) for d in answer.disputes],
        )

    async def deliveries_for_payment(self, payment_id: str) -> list[Delivery]:
        answer = await self._call(
            "ListDeliveries",
            self._webhooks().ListDeliveries,
            webhook_admin_pb2.ListDeliveriesRequest(payment_intent=payment_id, limit=100),
        )
        return [_delivery(d) for d in answer.data]

    async def refund_payment(
        self, payment_id: str, amount: int, reason: str, operator: str, idempotency_key: str
    ) -> Refund:
        answer = await self._call(
            "RefundPayment",
            self._backoffice().RefundPayment,
            backoffice_pb2.RefundPaymentRequest(
                payment_intent=payment_id,
                amount=amount,
                reason=reason,
                operator=operator,
                idempotency_key=idempotency_key,
            ),
        )
        return _refund(answer)

    async def search_disputes(self, status: str, merchant_id: str, psp: str) -> list[Dispute]:
        answer = await self._call(
            "SearchDisputes",
            self._backoffice().SearchDisputes,
            backoffice_pb2.SearchDisputesRequest(
                status=status, merchant_id=merchant_id, psp=psp, limit=100
            ),
        )
        return [
            _dispute(
                s.dispute,
                s.merchant_id,
                s.evidence_due_by if s.HasField("evidence_due_by") else None,
            )
            for s in answer.data
        ]

    async def export_movements(self, start: datetime, end: datetime) -> list[MoneyMovement]:
        request = backoffice_pb2.ExportMoneyMovementsRequest()
        getattr(request, "from").CopyFrom(_ts(start))
        request.to.CopyFrom(_ts(end))
        answer = await self._call(
            "ExportMoneyMovements", self._backoffice().ExportMoneyMovements, request
        )
        return [
            MoneyMovement(
                type=m.type,
                id=m.id,
                payment_intent=m.payment_intent,
                merchant_id=m.merchant_id,
                amount=m.amount,
                currency=m.currency,
                psp=m.psp,
                psp_reference=m.psp_reference,
                fee=m.fee if m.HasField("fee") else None,
                settled=_at(m.settled),
            )
            for m in answer.data
        ]

    async def payment_stats(self, start: datetime, end: datetime) -> PaymentStats:
        request = backoffice_pb2.GetPaymentStatsRequest()
        getattr(request, "from").CopyFrom(_ts(start))
        request.to.CopyFrom(_ts(end))
        answer = await self._call("GetPaymentStats", self._backoffice().GetPaymentStats, request)
        return PaymentStats(
            days=[
                DailyPsp(d.day, d.psp, d.attempted, d.succeeded, dict(d.volume))
                for d in answer.days
            ],
            declines=[(d.code, d.count) for d in answer.declines],
        )

    # Subscriptions and rebill dead letters: rebill.v1.RebillAdminService.

    async def recovery_stats(self, start: datetime, end: datetime) -> list[DailyRecovery]:
        request = rebill_admin_pb2.GetRecoveryStatsRequest()
        getattr(request, "from").CopyFrom(_ts(start))
        request.to.CopyFrom(_ts(end))
        answer = await self._call("GetRecoveryStats", self._rebill().GetRecoveryStats, request)
        return [
            DailyRecovery(d.day, d.paid_first_time, d.declined, d.recovered) for d in answer.days
        ]

    async def search_subscriptions(
        self, q: str, merchant_id: str, status: str
    ) -> Page[Subscription]:
        answer = await self._call(
            "SearchSubscriptions",
            self._rebill().SearchSubscriptions,
            rebill_admin_pb2.SearchSubscriptionsRequest(
                q=q, merchant_id=merchant_id, status=status, limit=50
            ),
        )
        return Page([_subscription(s) for s in answer.data], answer.has_more)

    async def subscription_detail(self, subscription_id: str) -> SubscriptionDetail:
        answer = await self._call(
            "GetSubscriptionDetail",
            self._rebill().GetSubscriptionDetail,
            rebill_admin_pb2.GetSubscriptionDetailRequest(id=subscription_id),
        )
        dunning = answer.dunning
        return SubscriptionDetail(
            subscription=_subscription(answer.summary),
            renewals=[
                Renewal(
                    r.id,
                    _at(r.period_start),
                    _at(r.period_end),
                    r.amount,
                    r.currency,
                    r.status,
                    r.attempt,
                    r.payment_intent,
                )
                for r in answer.renewals
            ],
            retry_after_days=list(dunning.retry_after_days),
            attempts_made=dunning.attempts_made,
            next_attempt_at=_at(dunning.next_attempt_at),
            final_status=dunning.final_status,
            timeline=[_audit(e) for e in answer.timeline],
            chain_verified=answer.chain_verified,
            chain_problem=answer.chain_problem,
        )

    async def dead_letters(self) -> list[DeadLetter]:
        answer = await self._call(
            "ListDeadLetters",
            self._rebill().ListDeadLetters,
            rebill_admin_pb2.ListDeadLettersRequest(status="dead", limit=100),
        )
        return [_letter(letter) for letter in answer.data]

    async def retry_dead_letter(self, letter_id: str, operator: str) -> DeadLetter:
        answer = await self._call(
            "RetryDeadLetter",
            self._rebill().RetryDeadLetter,
            rebill_admin_pb2.RetryDeadLetterRequest(id=letter_id, operator=operator),
        )
        return _letter(answer)

    async def discard_dead_letter(self, letter_id: str, operator: str) -> DeadLetter:
        answer = await self._call(
            "DiscardDeadLetter",
            self._rebill().DiscardDeadLetter,
            rebill_admin_pb2.DiscardDeadLetterRequest(id=letter_id, operator=operator),
        )
        return _letter(answer)

    # Webhook deliveries given up on: webhook.v1.WebhookAdminService.

    async def dead_deliveries(self) -> list[Delivery]:
        answer = await self._call(
            "ListDeadDeliveries",
            self._webhooks().ListDeadDeliveries,
            webhook_admin_pb2.ListDeadDeliveriesRequest(limit=100),
        )
        return [_delivery(d) for d in answer.data]

    async def retry_delivery(self, delivery_id: str, operator: str) -> Delivery:
        answer = await self._call(
            "RetryDelivery",
            self._webhooks().RetryDelivery,
            webhook_admin_pb2.RetryDeliveryRequest(id=delivery_id, operator=operator),
        )
        return _delivery(answer)

    async def discard_delivery(self, delivery_id: str, operator: str) -> Delivery:
        answer = await self._call(
            "DiscardDelivery",
            self._webhooks().DiscardDelivery,
            webhook_admin_pb2.DiscardDeliveryRequest(id=delivery_id, operator=operator),
        )
        return _delivery(answer)

    # Reconciliation: gateway.v1.ReconciliationService.

    async def mismatches(self, state: str, kind: str, psp: str) -> list[Mismatch]:
        answer = await self._call(
            "ListMismatches",
            self._recon().ListMismatches,
            reconciliation_pb2.ListMismatchesRequest(
                state=MISMATCH_STATES.get(state, 0),  # type: ignore[arg-type]
                kind=MISMATCH_KINDS.get(kind, 0),  # type: ignore[arg-type]
                psp=psp,
                limit=100,
            ),
        )
        return [_mismatch(m) for m in answer.mismatches]

    async def resolve_mismatch(
        self, mismatch_id: str, resolution: str, note: str, operator: str
    ) -> Mismatch:
        answer = await self._call(
            "ResolveMismatch",
            self._recon().ResolveMismatch,
            reconciliation_pb2.ResolveMismatchRequest(
                id=mismatch_id,
                resolution=RESOLUTIONS.get(resolution, 0),  # type: ignore[arg-type]
                note=note,
                operator=operator,
            ),
        )
        return _mismatch(answer.mismatch)

    # Merchants: gateway.v1.MerchantAdminService.

    async def merchants(self) -> list[Merchant]:
        answer = await self._call(
            "ListMerchants",
            self._merchant_admin().ListMerchants,
            merchant_admin_pb2.ListMerchantsRequest(limit=100),
        )
        return [_merchant(m) for m in answer.merchants]

    async def roll_key(self, merchant_id: str, livemode: bool) -> RolledKey:
        answer = await self._call(
            "RollApiKey",
            self._merchant_admin().RollApiKey,
            merchant_admin_pb2.RollApiKeyRequest(merchant_id=merchant_id, livemode=livemode),
        )
        return RolledKey(merchant_id, livemode, answer.secret_key)

    async def revoke_key(self, merchant_id: str, api_key_id: str) -> None:
        await self._call(
            "RevokeApiKey",
            self._merchant_admin().RevokeApiKey,
            merchant_admin_pb2.RevokeApiKeyRequest(merchant_id=merchant_id, api_key_id=api_key_id),
        )

    async def set_routing(self, merchant_id: str, psps: list[str]) -> list[str]:
        await self._call(
            "SetPspRouting",
            self._merchant_admin().SetPspRouting,
            merchant_admin_pb2.SetPspRoutingRequest(merchant_id=merchant_id, psp_routing=psps),
        )
        return psps

    # System: each service's gRPC health and its Prometheus /metrics.

    async def system_status(self) -> SystemStatus:
        health = dict(
            zip(
                self._addresses,
                await asyncio.gather(*(self._health(s) for s in self._addresses)),
                strict=True,
            )
        )
        texts: dict[str, str] = {}
        unreachable = []
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            for name, url in self._metrics_urls.items():
                try:
                    response = await http.get(url)
                    response.raise_for_status()
                    texts[name] = response.text
                except httpx.HTTPError:
                    unreachable.append(f"{name} ({url})")
        return summarize_metrics(health, texts, unreachable)

    async def _health(self, service: str) -> str:
        stub = health_pb2_grpc.HealthStub(self._channel(service))
        try:
            answer = await stub.Check(  # type: ignore[attr-defined]  # the stub is untyped
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def summarize_metrics(
    health: dict[str, str], texts: dict[str, str], unreachable: list[str]
) -> SystemStatus:
    """The System page's figures from each process's Prometheus text: the gateway's circuit
    breakers, rebill's queue depths and scheduler leader, every outbox's oldest pending event
    and every dependency probe (metric names: the services' metrics.py and the kit's)."""
    breakers: dict[str, str] = {}
    queues: dict[tuple[str, str], float] = {}
    outbox: dict[str, float] = {}
    dependencies: dict[tuple[str, str], bool] = {}
    leader = ""
    for process, text in texts.items():
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "psp_circuit_breaker_state":
                    breakers[labels["psp"]] = BREAKER_STATES.get(int(sample.value), "unknown")
                elif sample.name == "rebill_queue_depth":
                    key = (labels["queue"], labels["state"])
                    queues[key] = max(queues.get(key, 0.0), sample.value)
                elif sample.name == "outbox_oldest_pending_seconds":
                    service = labels.get("service", process)
                    outbox[service] = max(outbox.get(service, 0.0), sample.value)
                elif sample.name == "paymesh_dependency_up":
                    dependencies[(labels["service"], labels["dependency"])] = sample.value == 1
                elif sample.name == "rebill_scheduler_leader" and sample.value == 1:
                    leader = process
    return SystemStatus(
        health=health,
        breakers=sorted(breakers.items()),
        queues=[(q, s, v) for (q, s), v in sorted(queues.items())],
        outbox=sorted(outbox.items()),
        dependencies=[(s, d, up) for (s, d), up in sorted(dependencies.items())],
        scheduler_leader=leader,
        unreachable=unreachable,
    )
