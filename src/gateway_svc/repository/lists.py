"""The lists: a merchant's intents a page at a time, and what the recovery sweep scans (PSP
operations and refunds whose outcome is still not recorded)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_svc.domain.models import PaymentIntent, Refund
from gateway_svc.domain.status import RefundStatus
from gateway_svc.repository.rows import INTENT_FIELDS, REFUND_FIELDS, to_intent
from gateway_svc.repository.statements import ago
from gateway_svc.tables import payment_intents, refunds
from paymesh.platform.callers import Merchant, newest_first_page
from paymesh.platform.db import constant


class Lists:
    """The lists of PaymentRepository (gateway_svc.repository.payments), read outside any
    transaction: the merchant's list on the list engine (maybe a replica), the sweep's scans,
    which must see the latest state, on the primary."""

    _autocommit: AsyncEngine
    _lists: AsyncEngine

    async def page(
        self, merchant: Merchant, limit: int, starting_after: str
    ) -> tuple[list[PaymentIntent], bool]:
        """Newest first; the page after `starting_after` (an id of the merchant's) if given."""
        async with self._lists.connect() as connection:
            rows, has_more = await newest_first_page(
                connection, payment_intents, merchant, limit, starting_after, "payment_intent"
            )
        return [to_intent(row) for row in rows], has_more

    async def pending_intents(
        self, older_than_seconds: float, limit: int = 100
    ) -> list[PaymentIntent]:
        """Intents whose PSP operation went out more than `older_than_seconds` ago and whose
        outcome is still not recorded."""
        async with self._autocommit.connect() as connection:
            rows = (
                await connection.execute(
                    select(payment_intents)
                    .where(
                        payment_intents.c.pending_operation.is_not(None),
                        payment_intents.c.pending_since < ago(older_than_seconds),
                    )
                    .order_by(payment_intents.c.pending_since)
                    .limit(limit)
                )
            ).all()
        return [to_intent(row) for row in rows]

    async def pending_refunds(
        self, older_than_seconds: float, limit: int = 100
    ) -> list[tuple[Refund, PaymentIntent]]:
        """Refunds still pending `older_than_seconds` after they were reserved, each with its
        intent."""
        async with self._autocommit.connect() as connection:
            rows = (
                await connection.execute(
                    select(refunds, payment_intents)
                    .join(payment_intents, payment_intents.c.id == refunds.c.payment_intent)
                    .where(
                        refunds.c.status == constant(RefundStatus.PENDING),
                        refunds.c.created_at < ago(older_than_seconds),
                    )
                    .order_by(refunds.c.created_at)
                    .limit(limit)
                )
            ).all()
        pairs = []
        for row in rows:
            values = row._mapping
            refund = Refund(**{name: values[refunds.c[name]] for name in REFUND_FIELDS})
            intent = PaymentIntent(
                **{name: values[payment_intents.c[name]] for name in INTENT_FIELDS}
            )
            pairs.append((refund, intent))
        return pairs
