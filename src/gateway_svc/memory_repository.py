"""The in-memory twin of `PaymentRepository`: the same methods and the same rules (conditional
changes, audit rows and events written only with the change they describe, refunds reserved
against what is left, keys bound to their object), in dictionaries. For unit tests of the
use cases; `tests/integration/test_payment_repository_contract.py` runs one suite against
both, so the twin cannot drift from the real thing."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway_svc.domain import validation
from gateway_svc.domain.changes import IntentChange, KeyRef
from gateway_svc.domain.models import AuditEntry, Event, PaymentIntent, Refund
from gateway_svc.domain.status import Action, RefundStatus, move
from paymesh.platform.callers import Merchant
from paymesh.platform.problems import InvalidArgument, NotFound


@dataclasses.dataclass
class StoredKey:
    locked_at: datetime  # the fence of the claim that holds it
    state: str = "running"
    object_id: str | None = None


class InMemoryPaymentRepository:
    def __init__(self):
        self.intents: dict[str, PaymentIntent] = {}
        self.refunds: dict[str, Refund] = {}
        self.audits: list[AuditEntry] = []
        self.events: list[Event] = []
        self.keys: dict[tuple[str, bool, str], StoredKey] = {}
        self.routes: dict[str, list[str]] = {}
        self.revoked: set[str] = set()

    # --- reads ---------------------------------------------------------------------------

    async def intent(self, intent_id: str, merchant: Merchant | None = None) -> PaymentIntent:
        intent = self.intents.get(intent_id)
        if intent is None or (merchant is not None and not _owned(intent, merchant)):
            raise NotFound(f"no such payment_intent: {intent_id!r}", reason="resource_missing")
        return intent

    async def refund(self, refund_id: str, merchant: Merchant | None = None) -> Refund:
        refund = self.refunds.get(refund_id)
        if refund is None or (merchant is not None and not _owned(refund, merchant)):
            raise NotFound(f"no such refund: {refund_id!r}", reason="resource_missing")
        return refund

    async def page(
        self, merchant: Merchant, limit: int, starting_after: str
    ) -> tuple[list[PaymentIntent], bool]:
        mine = sorted(
            (i for i in self.intents.values() if _owned(i, merchant)),
            key=lambda i: (i.created_at, i.id),
            reverse=True,
        )
        if starting_after:
            cursor = next((i for i in mine if i.id == starting_after), None)
            if cursor is None:
                raise InvalidArgument.for_field(
                    "starting_after", "resource_missing", "no such payment_intent"
                )
            mine = [i for i in mine if (i.created_at, i.id) < (cursor.created_at, cursor.id)]
        return mine[:limit], len(mine) > limit

    async def psp_route(self, merchant_id: str) -> list[str]:
        return list(self.routes.get(merchant_id, ["sandbox", "stripe"]))

    async def revoke_payment_method(self, merchant: Merchant, payment_method: str) -> None:
        self.revoked.add(payment_method)

    async def payment_method_revoked(self, payment_method: str) -> bool:
        return payment_method in self.revoked

    async def pending_intents(self, older_than_seconds: float, limit: int = 100):
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        pending = [
            i
            for i in self.intents.values()
            if i.pending_operation is not None and i.pending_since and i.pending_since < cutoff
        ]
        return sorted(pending, key=lambda i: i.pending_since)[:limit]

    async def pending_refunds(self, older_than_seconds: float, limit: int = 100):
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        pending = [
            r
            for r in self.refunds.values()
            if r.status == RefundStatus.PENDING and r.created_at and r.created_at < cutoff
        ]
        pending.sort(key=lambda r: r.created_at)
        return [(r, self.intents[r.payment_intent]) for r in pending[:limit]]

    # --- intent writes -------------------------------------------------------------------

    async def insert_intent(
        self, intent: PaymentIntent, audits: list[AuditEntry], event: Event, bind: KeyRef | None
    ) -> PaymentIntent:
        now = datetime.now(UTC)
        stored = intent.replace(created_at=now, updated_at=now)
        self.intents[stored.id] = stored
        self.audits.extend(audits)
        self.events.append(event)
        if bind is not None:
            self._bind(bind, stored.id)
        return stored

    async def insert_intent_unless_revoked(
        self, intent: PaymentIntent, audits: list[AuditEntry], event: Event, bind: KeyRef | None
    ) -> PaymentIntent | None:
        if intent.payment_method in self.revoked:
            return None
        return await self.insert_intent(intent, audits, event, bind)

    async def change_intent(self, change: IntentChange) -> PaymentIntent | None:
        current = self.intents.get(change.intent.id)
        if current is None or not change.holds_for(current):
            return None
        after = change.after
        updated = current.replace(**change.values, updated_at=datetime.now(UTC))
        self.intents[updated.id] = updated
        for actor, action, result, details in change.audits:
            self.audits.append(AuditEntry.of_intent(after, actor, action, result, **details))
        if change.event is not None:
            self.events.append(Event.of_intent(change.event, after))
        if change.bind is not None:
            self._bind(change.bind, updated.id)
        if change.settles:
            self._settle_keys(updated.merchant_id, updated.id)
        return updated

    async def audit(self, entry: AuditEntry) -> None:
        self.audits.append(entry)

    # --- refunds -------------------------------------------------------------------------

    async def reserve_refund(
        self,
        merchant: Merchant,
        intent_id: str,
        requested: int,
        reason: str,
        refund_id: str,
        bind: KeyRef | None,
        actor: str = "api",
        details: dict[str, Any] | None = None,
    ) -> tuple[PaymentIntent, Refund]:
        intent = await self.intent(intent_id, merchant)
        move(intent_id, intent.status, Action.REFUND)
        amount = validation.refund_amount(
            requested, intent.amount_received, intent.amount_refunded, reason
        )
        self.intents[intent_id] = intent.replace(amount_refunded=intent.amount_refunded + amount)
        refund = Refund(
            id=refund_id,
            merchant_id=merchant.id,
            livemode=merchant.livemode,
            payment_intent=intent_id,
            amount=amount,
            currency=intent.currency,
            status=RefundStatus.PENDING,
            reason=reason or None,
            created_at=datetime.now(UTC),
        )
        self.refunds[refund_id] = refund
        self._record_refund(refund, actor, "refund_created", "refund.created", details)
        if bind is not None:
            self._bind(bind, refund_id)
        return intent, refund

    async def finish_refund(
        self,
        refund: Refund,
        status: RefundStatus,
        psp_reference: str | None,
        actor: str,
        details: dict[str, Any] | None = None,
    ) -> Refund | None:
        current = self.refunds.get(refund.id)
        if current is None or current.status != RefundStatus.PENDING:
            return None
        done = current.replace(status=status, psp_reference=psp_reference)
        self.refunds[done.id] = done
        if status == RefundStatus.FAILED:
            intent = self.intents[done.payment_intent]
            self.intents[intent.id] = intent.replace(
                amount_refunded=intent.amount_refunded - done.amount
            )
        event = "refund.succeeded" if status == RefundStatus.SUCCEEDED else "refund.failed"
        self._record_refund(done, actor, "refund", event, details)
        self._settle_keys(done.merchant_id, done.id)
        return done

    def _record_refund(
        self,
        refund: Refund,
        actor: str,
        action: str,
        event: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.events.append(Event.of_refund(event, refund))
        self.audits.append(AuditEntry.of_refund(refund, actor, action, **(details or {})))

    # --- idempotency keys ----------------------------------------------------------------

    def open_key(self, merchant: Merchant, key: str) -> KeyRef:
        """What a claim does: the key is `running`, bound to nothing yet, and held by the
        claim that took it now."""
        ref = KeyRef(merchant, key, fence=datetime.now(UTC))
        self.keys[_pk(ref)] = StoredKey(ref.fence)
        return ref

    def take_over(self, key: KeyRef) -> KeyRef:
        """What a retry's claim does to a key whose holder looked dead: it holds it now."""
        stored = self.keys[_pk(key)]
        stored.locked_at = max(datetime.now(UTC), stored.locked_at + timedelta(microseconds=1))
        return dataclasses.replace(key, fence=stored.locked_at)

    async def complete_key(self, key: KeyRef, object_id: str) -> None:
        self._bind(key.ended(), object_id)

    def _bind(self, key: KeyRef, object_id: str) -> None:
        stored = self.keys.get(_pk(key))
        if stored is not None and (stored.state, stored.locked_at) == ("running", key.fence):
            stored.object_id = object_id
            stored.state = "done" if key.done else "running"

    def _settle_keys(self, merchant_id: str, object_id: str) -> None:
        for (owner, _, _), stored in self.keys.items():
            if (owner, stored.object_id, stored.state) == (merchant_id, object_id, "running"):
                stored.state = "done"


def _owned(obj: Any, merchant: Merchant) -> bool:
    return obj.merchant_id == merchant.id and obj.livemode == merchant.livemode


def _pk(key: KeyRef) -> tuple[str, bool, str]:
    return (key.merchant.id, key.merchant.livemode, key.key)
