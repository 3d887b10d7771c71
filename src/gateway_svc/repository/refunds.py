"""Refunds: the amount reserved under the intent's lock (concurrent refunds can never exceed
what was captured), and the outcome that settles a pending refund."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway_svc.domain import validation
from gateway_svc.domain.changes import KeyRef
from gateway_svc.domain.models import AuditEntry, Event, PaymentIntent, Refund
from gateway_svc.domain.status import Action, RefundStatus, move
from gateway_svc.repository.rows import to_intent, to_refund
from gateway_svc.repository.statements import (
    BIND_KEY,
    key_params,
    missing,
    one,
    record,
    settle_keys,
)
from gateway_svc.tables import payment_intents, refunds
from paymesh.platform.callers import Merchant, owned_by
from paymesh.platform.direct_sql import DirectSql


class Refunds:
    """The refund half of PaymentRepository (gateway_svc.repository.payments)."""

    _engine: AsyncEngine
    _direct: DirectSql

    async def refund(self, refund_id: str, merchant: Merchant | None = None) -> Refund:
        return to_refund(await one(self._direct, refunds, refund_id, merchant))

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
        """Reserves the refund's amount under the intent's lock (concurrent refunds can never
        exceed what was captured) and records the refund `pending`, in one transaction; its
        audit row by `actor`, with `details`."""
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    owned_by(payment_intents, intent_id, merchant).with_for_update()
                )
            ).first()
            if row is None:
                raise missing(payment_intents, intent_id)
            intent = to_intent(row)
            move(intent_id, intent.status, Action.REFUND)
            amount = validation.refund_amount(
                requested, intent.amount_received, intent.amount_refunded, reason
            )
            await connection.execute(
                update(payment_intents)
                .where(payment_intents.c.id == intent_id)
                .values(
                    amount_refunded=payment_intents.c.amount_refunded + amount,
                    updated_at=func.now(),
                )
            )
            refund = to_refund(
                (
                    await connection.execute(
                        insert(refunds)
                        .values(
                            id=refund_id,
                            merchant_id=merchant.id,
                            livemode=merchant.livemode,
                            payment_intent=intent_id,
                            amount=amount,
                            currency=intent.currency,
                            status=RefundStatus.PENDING,
                            reason=reason or None,
                        )
                        .returning(refunds)
                    )
                ).one()
            )
            await _record_refund(
                connection, refund, actor, "refund_created", "refund.created", details
            )
            if bind is not None:
                await connection.execute(BIND_KEY, {**key_params(bind), "k_object_id": refund.id})
        return intent, refund

    async def finish_refund(
        self,
        refund: Refund,
        status: RefundStatus,
        psp_reference: str | None,
        actor: str,
        details: dict[str, Any] | None = None,
    ) -> Refund | None:
        """Settles a pending refund; a failed one gives its amount back to the intent. None if
        it was no longer pending (settled by someone else)."""
        event = "refund.succeeded" if status == RefundStatus.SUCCEEDED else "refund.failed"
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    update(refunds)
                    .where(refunds.c.id == refund.id, refunds.c.status == RefundStatus.PENDING)
                    .values(status=status, psp_reference=psp_reference)
                    .returning(refunds)
                )
            ).first()
            if row is None:
                return None
            done = to_refund(row)
            if status == RefundStatus.FAILED:
                await connection.execute(
                    update(payment_intents)
                    .where(payment_intents.c.id == refund.payment_intent)
                    .values(
                        amount_refunded=payment_intents.c.amount_refunded - refund.amount,
                        updated_at=func.now(),
                    )
                )
            await _record_refund(connection, done, actor, "refund", event, details)
            await connection.execute(settle_keys(done.merchant_id, done.id))
        return done


async def _record_refund(
    connection: AsyncConnection,
    refund: Refund,
    actor: str,
    action: str,
    event: str,
    details: dict[str, Any] | None,
) -> None:
    audit = AuditEntry.of_refund(refund, actor, action, **(details or {}))
    await record(connection, [Event.of_refund(event, refund)], audit)
