"""Disputes' reads: the merchant's, and paymesh's dispute of a PSP dispute (in the transaction
that applies the PSP's event: gateway_svc.repository.psp_events writes it)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway_svc.domain.models import Dispute
from gateway_svc.repository.rows import to_dispute
from gateway_svc.tables import disputes
from paymesh.platform.callers import Merchant, newest_first_page, owned_by
from paymesh.platform.db import autocommit
from paymesh.platform.problems import NotFound


async def recorded(connection: AsyncConnection, psp: str, reference: str) -> Dispute | None:
    """paymesh's dispute of the PSP's dispute `reference`, if there is one."""
    row = (
        await connection.execute(
            select(disputes).where(disputes.c.psp == psp, disputes.c.psp_reference == reference)
        )
    ).first()
    return None if row is None else to_dispute(row)


class DisputeRepository:
    """The merchant's reads of its disputes."""

    def __init__(self, engine: AsyncEngine, lists: AsyncEngine | None = None):
        self._reads = autocommit(engine)
        self._lists = autocommit(lists or engine)  # a replica's, maybe a moment behind

    async def dispute(self, dispute_id: str, merchant: Merchant) -> Dispute:
        """The merchant's dispute (in its mode); another's is as good as missing."""
        async with self._reads.connect() as connection:
            row = (await connection.execute(owned_by(disputes, dispute_id, merchant))).first()
        if row is None:
            raise NotFound(f"no such dispute: {dispute_id!r}", reason="resource_missing")
        return to_dispute(row)

    async def page(
        self, merchant: Merchant, limit: int, starting_after: str, payment_intent: str
    ) -> tuple[Sequence[Dispute], bool]:
        """Newest first; the page after `starting_after` (a dispute of the merchant's) if
        given; only those of `payment_intent` if given."""
        filters = [disputes.c.payment_intent == payment_intent] if payment_intent else []
        async with self._lists.connect() as connection:
            rows, has_more = await newest_first_page(
                connection, disputes, merchant, limit, starting_after, "dispute", *filters
            )
        return [to_dispute(row) for row in rows], has_more
