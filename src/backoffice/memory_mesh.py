"""The in-memory twin of mesh.MeshClient, for the pages' unit tests: a few payments,
subscriptions, mismatches, dead letters and merchants, changed by the actions as the
services would change them. `unavailable` names calls that fail as an unmerged RPC does."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime, timedelta

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

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _payment(n: int, **changes: object) -> Payment:
    base = Payment(
        id=f"pi_test{n:04d}",
        merchant_id="acct_acme",
        merchant_name="Acme",
        amount=1000 + n,
        currency="usd",
        status="succeeded",
        psp="sandbox",
        card_brand="visa",
        card_last4="4242",
        card_fingerprint="Qm9va2tlZXBlcg_Z",
        created=T0 + timedelta(minutes=n),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class MemoryMesh:
    def __init__(self) -> None:
        self.unavailable: set[str] = set()
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.payments = [
            _payment(1),
            _payment(2, merchant_id="acct_globex", merchant_name="Globex", psp="stripe"),
            _payment(3, status="requires_payment_method", decline_code="insufficient_funds"),
        ]
        self.refunds: dict[str, list[Refund]] = {}
        self._refund_keys: dict[str, Refund] = {}
        self.subscriptions = [
            Subscription(
                "sub_test1",
                "acct_acme",
                990,
                "usd",
                "month",
                "active",
                "pm_card1",
                T0 + timedelta(days=30),
                T0,
            )
        ]
        self.mismatch_list = [
            Mismatch(
                "rcm_test1",
                "sandbox",
                "amount_mismatch",
                "open",
                "ch_1",
                "charge",
                "pi_test0001",
                1100,
                1001,
                "usd",
                "usd",
                "succeeded",
                "succeeded",
                T0,
            )
        ]
        self.letters = [
            DeadLetter(
                "dl_test1",
                "rebill.monthly",
                "job_1",
                "delivery_limit",
                '{"job": "job_1"}',
                "dead",
                T0,
            )
        ]
        self.dead = [
            Delivery(
                "whd_test1",
                "evt_1",
                "payment_intent.succeeded",
                "acct_acme",
                "https://acme.example/hooks",
                "dead",
                "pi_test0001",
                T0,
                [DeliveryAttempt(T0, 500, 120, "", "failed")],
            )
        ]
        self.merchant_list = [
            Merchant(
                "acct_acme",
                "Acme",
                ["sandbox", "stripe"],
                [ApiKey("key_1", False, "a1b2", T0, None)],
                T0,
            )
        ]

    def _enter(self, call: str, *args: object) -> None:
        if call in self.unavailable:
            raise MeshError(call, "UNIMPLEMENTED", "Method not found!")
        self.calls.append((call, args))

    async def close(self) -> None:
        pass

    async def search_payments(self, filters: PaymentFilters) -> Page[Payment]:
        self._enter("SearchPayments", filters)
        found = [
            p
            for p in self.payments
            if (not filters.q or filters.q in (p.id, p.merchant_id, str(p.amount)))
            and (not filters.merchant_id or p.merchant_id == filters.merchant_id)
            and (not filters.status or p.status == filters.status)
            and (not filters.psp or p.psp == filters.psp)
            and (not filters.amount_min or p.amount >= filters.amount_min)
            and (not filters.amount_max or p.amount <= filters.amount_max)
        ]
        found.sort(key=lambda p: p.created or T0, reverse=True)
        if filters.starting_after:
            ids = [p.id for p in found]
            if filters.starting_after in ids:
                found = found[ids.index(filters.starting_after) + 1 :]
        return Page(found[: filters.limit], len(found) > filters.limit)

    def _find(self, payment_id: str) -> Payment:
        for payment in self.payments:
            if payment.id == payment_id:
                return payment
        raise MeshError("GetPaymentDetail", "NOT_FOUND", f"no payment intent {payment_id}")

    async def payment_detail(self, payment_id: str) -> PaymentDetail:
        self._enter("GetPaymentDetail", payment_id)
        payment = self._find(payment_id)
        timeline = [
            AuditEntry(
                payment.created, "api", "payment_intent.create", payment.id, "created", "{}"
            ),
            AuditEntry(
                payment.created,
                "api",
                "payment_intent.confirm",
                payment.id,
                payment.status,
                '{"card": {"brand": "visa", "last4": "4242"}}',
            ),
        ]
        for refund in self.refunds.get(payment_id, []):
            timeline.append(
                AuditEntry(
                    refund.created,
                    "operator",
                    "refund.create",
                    refund.id,
                    "succeeded",
                    "{}",
                    "finance@example.com",
                )
            )
        attempts = [
            PspAttempt(
                f"{payment.id}:auth",
                payment.psp,
                "authorize",
                "succeeded",
                "ch_1",
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "",
                payment.created,
            )
        ]
        return PaymentDetail(
            payment,
            timeline,
            True,
            len(timeline),
            "",
            attempts,
            self.refunds.get(payment_id, []),
            [],
        )

    async def deliveries_for_payment(self, payment_id: str) -> list[Delivery]:
        self._enter("ListDeliveries", payment_id)
        return [d for d in self.dead if d.payment_intent == payment_id]

    async def refund_payment(
        self, payment_id: str, amount: int, reason: str, operator: str, idempotency_key: str
    ) -> Refund:
        self._enter("RefundPayment", payment_id, amount, reason, operator, idempotency_key)
        if idempotency_key in self._refund_keys:
            return self._refund_keys[idempotency_key]
        payment = self._find(payment_id)
        left = payment.amount - payment.amount_refunded
        amount = amount or left
        if amount > left:
            raise MeshError("RefundPayment", "INVALID_ARGUMENT", "amount: more than remains")
        refund = Refund(
            f"re_{secrets.token_hex(6)}",
            amount,
            payment.currency,
            "succeeded",
            reason,
            datetime.now(UTC),
        )
        self.refunds.setdefault(payment_id, []).append(refund)
        self._refund_keys[idempotency_key] = refund
        self.payments = [
            dataclasses.replace(p, amount_refunded=p.amount_refunded + amount)
            if p.id == payment_id
            else p
            for p in self.payments
        ]
        return refund

    async def search_disputes(self, status: str, merchant_id: str, psp: str) -> list[Dispute]:
        self._enter("SearchDisputes", status, merchant_id, psp)
        return [
            Dispute(
                "dp_test1",
                "pi_test0001",
                "acct_acme",
                1001,
                "usd",
                "fraudulent",
                "needs_response",
                "sandbox",
                T0 + timedelta(days=7),
                T0,
            )
        ]

    async def export_movements(self, start: datetime, end: datetime) -> list[MoneyMovement]:
        self._enter("ExportMoneyMovements", start, end)
        return [
            MoneyMovement(
                "capture",
                "pi_test0001",
                "pi_test0001",
                "acct_acme",
                1001,
                "USD",
                "sandbox",
                "ch_1",
                59,
                T0,
            ),
            MoneyMovement(
                "refund",
                "re_1",
                "pi_test0001",
                "acct_acme",
                -500,
                "USD",
                "sandbox",
                "re_psp_1",
                None,
                T0 + timedelta(hours=1),
            ),
        ]

    async def payment_stats(self, start: datetime, end: datetime) -> PaymentStats:
        self._enter("GetPaymentStats", start, end)
        return PaymentStats(
            days=[
                DailyPsp("2026-12-01", "sandbox", 10, 9, {"usd": 9000}),
                DailyPsp("2026-12-02", "sandbox", 12, 10, {"usd": 11000}),
                DailyPsp("2026-12-02", "stripe", 4, 4, {"usd": 4000}),
            ],
            declines=[("insufficient_funds", 3), ("card_declined", 1)],
        )

    async def recovery_stats(self, start: datetime, end: datetime) -> list[DailyRecovery]:
        self._enter("GetRecoveryStats", start, end)
        return [DailyRecovery("2026-12-01", 20, 4, 3), DailyRecovery("2026-12-02", 18, 2, 0)]

    async def search_subscriptions(
        self, q: str, merchant_id: str, status: str
    ) -> Page[Subscription]:
        self._enter("SearchSubscriptions", q, merchant_id, status)
        return Page(
            [
                s
                for s in self.subscriptions
                if (not q or q in (s.id, s.merchant_id, s.payment_method))
                and (not status or s.status == status)
            ]
        )

    async def subscription_detail(self, subscription_id: str) -> SubscriptionDetail:
        self._enter("GetSubscriptionDetail", subscription_id)
        found = [s for s in self.subscriptions if s.id == subscription_id]
        if not found:
            raise MeshError("GetSubscriptionDetail", "NOT_FOUND", "no such subscription")
        return SubscriptionDetail(
            found[0],
            [Renewal("rnw_1", T0, T0 + timedelta(days=30), 990, "usd", "paid", 1, "pi_r1")],
            [3, 5, 7],
            0,
            None,
            "unpaid",
            [AuditEntry(T0, "scheduler", "renewal.charged", "rnw_1", "paid", "{}")],
            True,
            "",
        )

    async def mismatches(self, state: str, kind: str, psp: str) -> list[Mismatch]:
        self._enter("ListMismatches", state, kind, psp)
        return [
            m
            for m in self.mismatch_list
            if (not state or m.state == state)
            and (not kind or m.kind == kind)
            and (not psp or m.psp == psp)
        ]

    async def resolve_mismatch(
        self, mismatch_id: str, resolution: str, note: str, operator: str
    ) -> Mismatch:
        self._enter("ResolveMismatch", mismatch_id, resolution, note, operator)
        if not note.strip():
            raise MeshError("ResolveMismatch", "INVALID_ARGUMENT", "note: required")
        for i, m in enumerate(self.mismatch_list):
            if m.id == mismatch_id:
                self.mismatch_list[i] = dataclasses.replace(
                    m, state=resolution, note=note, resolved_by=operator
                )
                return self.mismatch_list[i]
        raise MeshError("ResolveMismatch", "NOT_FOUND", f"no mismatch {mismatch_id}")

    def _letter(self, call: str, letter_id: str, status: str) -> DeadLetter:
        for i, letter in enumerate(self.letters):
            if letter.id == letter_id:
                self.letters[i] = dataclasses.replace(letter, status=status)
                return self.letters[i]
        raise MeshError(call, "NOT_FOUND", f"no dead letter {letter_id}")

    async def dead_letters(self) -> list[DeadLetter]:
        self._enter("ListDeadLetters")
        return [letter for letter in self.letters if letter.status == "dead"]

    async def retry_dead_letter(self, letter_id: str, operator: str) -> DeadLetter:
        self._enter("RetryDeadLetter", letter_id, operator)
        return self._letter("RetryDeadLetter", letter_id, "retried")

    async def discard_dead_letter(self, letter_id: str, operator: str) -> DeadLetter:
        self._enter("DiscardDeadLetter", letter_id, operator)
        return self._letter("DiscardDeadLetter", letter_id, "discarded")

    def _delivery(self, call: str, delivery_id: str, status: str) -> Delivery:
        for i, delivery in enumerate(self.dead):
            if delivery.id == delivery_id:
                self.dead[i] = dataclasses.replace(delivery, status=status)
                return self.dead[i]
        raise MeshError(call, "NOT_FOUND", f"no delivery {delivery_id}")

    async def dead_deliveries(self) -> list[Delivery]:
        self._enter("ListDeadDeliveries")
        return [d for d in self.dead if d.status == "dead"]

    async def retry_delivery(self, delivery_id: str, operator: str) -> Delivery:
        self._enter("RetryDelivery", delivery_id, operator)
        return self._delivery("RetryDelivery", delivery_id, "pending")

    async def discard_delivery(self, delivery_id: str, operator: str) -> Delivery:
        self._enter("DiscardDelivery", delivery_id, operator)
        return self._delivery("DiscardDelivery", delivery_id, "discarded")

    async def merchants(self) -> list[Merchant]:
        self._enter("ListMerchants")
        return list(self.merchant_list)

    async def roll_key(self, merchant_id: str, livemode: bool) -> RolledKey:
        self._enter("RollApiKey", merchant_id, livemode)
        return RolledKey(merchant_id, livemode, "sk_test_" + secrets.token_hex(12))

    async def revoke_key(self, merchant_id: str, api_key_id: str) -> None:
        self._enter("RevokeApiKey", merchant_id, api_key_id)

    async def set_routing(self, merchant_id: str, psps: list[str]) -> list[str]:
        self._enter("SetPspRouting", merchant_id, psps)
        self.merchant_list = [
            dataclasses.replace(m, psp_routing=psps) if m.id == merchant_id else m
            for m in self.merchant_list
        ]
        return psps

    async def system_status(self) -> SystemStatus:
        self._enter("SystemStatus")
        return SystemStatus(
            health={
                "gateway": "SERVING",
                "vault": "SERVING",
                "rebill": "SERVING",
                "webhook": "SERVING",
            },
            breakers=[("sandbox", "closed"), ("stripe", "open")],
            queues=[("rebill.monthly", "ready", 2.0)],
            outbox=[("gateway", 0.0)],
            dependencies=[("gateway", "postgres", True)],
            scheduler_leader="rebill",
            unreachable=[],
        )
