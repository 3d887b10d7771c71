"""Every SQL statement of the back office: payments of every merchant searched newest first, a
payment's whole story (its audit rows, refunds and disputes), disputes by evidence due date,
the ledger's settled money movements of a period, and daily figures per PSP. Reads only; an
operator's refund goes the merchant's way (gateway_svc.payments.refund)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, literal, or_, select, text, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_svc.domain.backoffice import (
    AuditRow,
    DailyPsp,
    Movement,
    PaymentSearch,
    daily_by_psp,
    movement,
)
from gateway_svc.tables import disputes, merchants, payment_audit, payment_intents, refunds
from paymesh.platform.audit_details import read_details
from paymesh.platform.db import autocommit
from paymesh.platform.problems import InvalidArgument, NotFound

_PI = payment_intents.c
_DP = disputes.c
# A capture is made at most this long after its authorization (Stripe's authorizations
# expire after 7 days; the sandbox's never need longer): the export looks this far back.
CAPTURE_WINDOW = timedelta(days=8)


def search_query(search: PaymentSearch, cursor: tuple[datetime, str] | None) -> Select[Any]:
    """The SELECT of one page of the search (one row more, to tell whether more follow), with
    each row's merchant name. Each filter has an index in the search's order (gateway_0014)."""
    conditions: list[Any] = []
    term = search.term
    if term is not None:
        if term.kind == "intent":
            conditions.append(_PI.id == term.value)
        elif term.kind == "merchant":
            conditions.append(_PI.merchant_id == term.value)
        elif term.kind == "amount":
            conditions.append(_PI.amount == term.value)
        else:
            # The PSP's reference of the payment, or of one of its refunds: one id set of two
            # index lookups (an OR of both filtered every payment, newest first).
            referenced = union_all(
                select(_PI.id).where(_PI.psp_reference == term.value),
                select(refunds.c.payment_intent).where(refunds.c.psp_reference == term.value),
            )
            conditions.append(_PI.id.in_(referenced))
    if search.merchant_id:
        conditions.append(_PI.merchant_id == search.merchant_id)
    if search.status:
        conditions.append(_PI.status == search.status)
    if search.psp:
        conditions.append(_PI.psp == search.psp)
    if search.amount_min:
        conditions.append(_PI.amount >= search.amount_min)
    if search.amount_max:
        conditions.append(_PI.amount <= search.amount_max)
    if search.created_from is not None:
        conditions.append(_PI.created_at >= search.created_from)
    if search.created_to is not None:
        conditions.append(_PI.created_at < search.created_to)
    if cursor is not None:
        conditions.append(tuple_(_PI.created_at, _PI.id) < tuple_(*cursor))
    return (
        select(payment_intents, merchants.c.name.label("merchant_name"))
        .outerjoin(merchants, merchants.c.id == _PI.merchant_id)
        .where(and_(True, *conditions))
        .order_by(_PI.created_at.desc(), _PI.id.desc())
        .limit(search.limit + 1)
    )


def disputes_query(
    statuses: Sequence[str],
    merchant_id: str,
    psp: str,
    limit: int,
    cursor: tuple[datetime | None, str] | None,
) -> Select[Any]:
    """Disputes whose evidence is due soonest first (those without a date last), then by id."""
    conditions: list[Any] = []
    if statuses:
        conditions.append(_DP.status.in_(list(statuses)))
    if merchant_id:
        conditions.append(_DP.merchant_id == merchant_id)
    if psp:
        conditions.append(_DP.psp == psp)
    if cursor is not None:
        due, after_id = cursor
        if due is None:
            conditions.append(and_(_DP.evidence_due_by.is_(None), _DP.id > after_id))
        else:
            conditions.append(
                or_(
                    _DP.evidence_due_by > due,
                    and_(_DP.evidence_due_by == due, _DP.id > after_id),
                    _DP.evidence_due_by.is_(None),
                )
            )
    return (
        select(disputes)
        .where(and_(True, *conditions))
        .order_by(_DP.evidence_due_by.asc().nulls_last(), _DP.id)
        .limit(limit + 1)
    )


def movements_query(start: datetime, end: datetime, merchant_id: str) -> Select[Any]:
    """The ledger's settled money movements of [start, end), oldest first: captures (when the
    intent first succeeded, by its audit row), succeeded refunds, disputes' withdrawals (when
    they opened) and won disputes' reversals (when they closed)."""
    captured_at = (
        select(payment_audit.c.at)
        .where(
            payment_audit.c.object_id == _PI.id,
            payment_audit.c.details["status"].astext == "succeeded",
        )
        .order_by(payment_audit.c.id)
        .limit(1)
        .correlate(payment_intents)
        .scalar_subquery()
    )
    in_window = [_PI.created_at >= start - CAPTURE_WINDOW, _PI.created_at < end]
    captures = (
        select(
            literal("capture").label("kind"),
            _PI.id.label("object_id"),
            _PI.id.label("payment_intent"),
            _PI.merchant_id,
            _PI.amount_received.label("amount"),
            _PI.currency,
            _PI.psp,
            _PI.psp_reference,
            captured_at.label("settled"),
        )
        .where(*in_window, _PI.amount_received > 0, _PI.psp_reference.is_not(None))
        .subquery()
    )
    rf = refunds.c
    refunded = (
        select(
            literal("refund").label("kind"),
            rf.id,
            rf.payment_intent,
            rf.merchant_id,
            rf.amount,
            rf.currency,
            _PI.psp,
            rf.psp_reference,
            rf.created_at,
        )
        .join(payment_intents, _PI.id == rf.payment_intent)
        .where(rf.status == "succeeded", rf.created_at >= start, rf.created_at < end)
    )
    opened = select(
        literal("dispute").label("kind"),
        _DP.id,
        _DP.payment_intent,
        _DP.merchant_id,
        _DP.amount,
        _DP.currency,
        _DP.psp,
        _DP.psp_reference,
        _DP.created_at,
    ).where(_DP.created_at >= start, _DP.created_at < end)
    reversed_ = select(
        literal("dispute_reversal").label("kind"),
        _DP.id,
        _DP.payment_intent,
        _DP.merchant_id,
        _DP.amount,
        _DP.currency,
        _DP.psp,
        _DP.psp_reference,
        _DP.updated_at,  # a closed dispute never changes again
    ).where(_DP.status == "won", _DP.updated_at >= start, _DP.updated_at < end)
    settled_captures = select(captures).where(captures.c.settled >= start, captures.c.settled < end)
    if merchant_id:
        settled_captures = settled_captures.where(captures.c.merchant_id == merchant_id)
        refunded = refunded.where(rf.merchant_id == merchant_id)
        opened = opened.where(_DP.merchant_id == merchant_id)
        reversed_ = reversed_.where(_DP.merchant_id == merchant_id)
    every = union_all(settled_captures, refunded, opened, reversed_).subquery()
    return select(every).order_by(every.c.settled, every.c.object_id)


# Daily figures: intents that reached a PSP, by the UTC day they were created.
_DAILY = text(
    """
    SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, psp, currency,
           count(*) AS attempted,
           count(*) FILTER (WHERE status IN ('succeeded', 'requires_capture')) AS succeeded,
           coalesce(sum(amount) FILTER (WHERE status IN ('succeeded', 'requires_capture')), 0)
             ::bigint AS volume
    FROM gateway.payment_intents
    WHERE created_at >= :start AND created_at < :end AND psp IS NOT NULL
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    """
)
# Every decline the PSPs answered for intents of the period (a payment declined twice with
# one code counts once), by its decline code.
_DECLINES = text(
    """
    SELECT coalesce(a.details->>'decline_code', 'card_declined') AS code,
           count(DISTINCT a.object_id) AS count
    FROM gateway.payment_intents p
    JOIN gateway.payment_audit a ON a.object_id = p.id
    WHERE p.created_at >= :start AND p.created_at < :end
      AND a.action = 'confirm' AND a.result = 'declined'
    GROUP BY 1
    ORDER BY 2 DESC, 1
    """
)


@dataclass(frozen=True)
class Story:
    """A payment's rows: its intent (with `merchant_name`), audit rows, refunds, disputes."""

    intent: Any
    audit: list[AuditRow]
    refunds: list[Any]
    disputes: list[Any]


class BackOfficeRepository:
    """`lists`: the engine of searches and exports (DATABASE_READ_URL's replica, which may
    lag); a payment's story is read from the primary."""

    def __init__(self, engine: AsyncEngine, lists: AsyncEngine | None = None):
        self.engine = engine  # the audit chain's check reads it
        self._reads = autocommit(engine)
        self._lists = autocommit(lists or engine)

    async def search(self, search: PaymentSearch) -> tuple[Sequence[Any], bool]:
        async with self._lists.connect() as connection:
            cursor = None
            if search.starting_after:
                cursor = (
                    await connection.execute(
                        select(_PI.created_at, _PI.id).where(_PI.id == search.starting_after)
                    )
                ).first()
                if cursor is None:
                    raise InvalidArgument.for_field(
                        "starting_after", "resource_missing", "no such payment_intent"
                    )
            after = (cursor.created_at, cursor.id) if cursor is not None else None
            rows = (await connection.execute(search_query(search, after))).all()
        return rows[: search.limit], len(rows) > search.limit

    async def story(self, intent_id: str) -> Story:
        async with self._reads.connect() as connection:
            intent = (
                await connection.execute(
                    select(payment_intents, merchants.c.name.label("merchant_name"))
                    .outerjoin(merchants, merchants.c.id == _PI.merchant_id)
                    .where(_PI.id == intent_id)
                )
            ).first()
            if intent is None:
                raise NotFound(f"no such payment_intent: {intent_id!r}", reason="resource_missing")
            refund_rows = (
                await connection.execute(
                    select(refunds)
                    .where(refunds.c.payment_intent == intent_id)
                    .order_by(refunds.c.created_at, refunds.c.id)
                )
            ).all()
            dispute_rows = (
                await connection.execute(
                    select(disputes)
                    .where(_DP.payment_intent == intent_id)
                    .order_by(_DP.created_at, _DP.id)
                )
            ).all()
            objects = [intent_id, *(r.id for r in refund_rows), *(d.id for d in dispute_rows)]
            audit_rows = (
                await connection.execute(
                    select(payment_audit)
                    .where(
                        payment_audit.c.object_id.in_(objects),
                        payment_audit.c.merchant_id == intent.merchant_id,
                    )
                    .order_by(payment_audit.c.id)
                )
            ).all()
        audit = [
            AuditRow(
                row.at,
                row.actor,
                row.action,
                row.object_id,
                row.result,
                read_details(row.details, row.details_z),
                row.chain,
            )
            for row in audit_rows
        ]
        # Ids are taken before the chain's lock: the time orders rows as they happened.
        audit.sort(key=lambda row: row.at)
        return Story(intent, audit, list(refund_rows), list(dispute_rows))

    async def disputes(
        self, statuses: Sequence[str], merchant_id: str, psp: str, limit: int, starting_after: str
    ) -> tuple[Sequence[Any], bool]:
        async with self._lists.connect() as connection:
            cursor = None
            if starting_after:
                found = (
                    await connection.execute(
                        select(_DP.evidence_due_by, _DP.id).where(_DP.id == starting_after)
                    )
                ).first()
                if found is None:
                    raise InvalidArgument.for_field(
                        "starting_after", "resource_missing", "no such dispute"
                    )
                cursor = (found.evidence_due_by, found.id)
            rows = (
                await connection.execute(disputes_query(statuses, merchant_id, psp, limit, cursor))
            ).all()
        return rows[:limit], len(rows) > limit

    async def movements(self, start: datetime, end: datetime, merchant_id: str) -> list[Movement]:
        async with self._lists.connect() as connection:
            rows = (await connection.execute(movements_query(start, end, merchant_id))).all()
        return [
            movement(
                row.kind,
                row.object_id,
                row.payment_intent,
                row.merchant_id,
                row.amount,
                row.currency,
                row.psp or "",
                row.psp_reference or "",
                row.settled,
            )
            for row in rows
        ]

    async def stats(
        self, start: datetime, end: datetime
    ) -> tuple[list[DailyPsp], list[tuple[str, int]]]:
        """Figures per UTC day and PSP, and decline codes, most frequent first."""
        params = {"start": start, "end": end}
        async with self._lists.connect() as connection:
            daily = [tuple(row) for row in await connection.execute(_DAILY, params)]
            declines = [
                (row.code, row.count) for row in await connection.execute(_DECLINES, params)
            ]
        return daily_by_psp(daily), declines
