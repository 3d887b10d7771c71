"""What a PSP's own report writes (a capture, a refund made at the PSP, how a customer's
authentication ended, a dispute), decided by gateway_svc.domain.psp_events and
gateway_svc.domain.disputes under the intent's lock, in one transaction with the event's
record in psp_events."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Row, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway_svc.domain import disputes as dispute_rules
from gateway_svc.domain import psp_events as psp_rules
from gateway_svc.domain import validation
from gateway_svc.domain.models import AuditEntry, Dispute, Event, PaymentIntent, Refund, new_id
from gateway_svc.domain.psp_events import PspEvent, PspEventResult
from gateway_svc.domain.status import Action, IntentStatus, RefundStatus, move
from gateway_svc.repository import disputes as dispute_reads
from gateway_svc.repository.rows import to_dispute, to_intent, to_refund
from gateway_svc.repository.statements import record
from gateway_svc.tables import disputes, payment_intents, psp_events, refunds
from paymesh.platform.coalesce import Coalescer
from paymesh.platform.direct_sql import DirectSql

T = TypeVar("T")


class PspEventRepository:
    def __init__(self, engine: AsyncEngine, direct: DirectSql):
        self._engine = engine
        self._direct = direct
        self._previews = Coalescer(self._preview_many)

    async def apply_psp_event(self, event: PspEvent) -> PspEventResult:
        """Applies what a PSP reports, in ONE transaction under the intent's lock: the change,
        its audit row (actor `webhook`), its outbox event and the event's record in
        psp_events, or nothing. The same event again, or another event reporting the same
        refund or dispute, changes nothing (ALREADY_APPLIED).

        First one unlocked read: the PSP's report of a capture the intent already shows (every
        charge of ours is announced back by its PSP) is answered from it. amount_received
        never changes once an intent succeeded, so that answer cannot be made wrong by a
        writer; every other case is decided again under the lock."""
        seen = await self._previews.submit(event)
        if seen is not None:
            shown = to_intent(seen)
            if seen["psp_event_seen"] or (
                event.kind == "capture"
                and psp_rules.capture(shown, event.amount, event.currency) == psp_rules.ALREADY
            ):
                return PspEventResult(psp_rules.ALREADY, shown)
        async with self._engine.begin() as connection:
            intent, not_yet = await _psp_intent(connection, event)
            if intent is None:
                return PspEventResult(not_yet or psp_rules.ignore("unknown_payment"))
            seen = (
                await connection.execute(
                    select(psp_events.c.event_id).where(
                        psp_events.c.psp == event.psp, psp_events.c.event_id == event.event_id
                    )
                )
            ).first()
            if seen is not None:
                return PspEventResult(psp_rules.ALREADY, intent)
            if event.kind == "capture":
                decision = psp_rules.capture(intent, event.amount, event.currency)
                waiting = intent.status == IntentStatus.REQUIRES_ACTION
                write = _complete if waiting else _capture
            elif event.kind in ("authorized", "failed"):
                decision = psp_rules.authentication_ended(
                    intent, event.kind, event.amount, event.currency
                )
                write = _complete
            elif event.kind == "refund":
                matched, others = await _refund_match(connection, intent, event)
                decision = psp_rules.refund(intent, matched, event.amount, event.currency, others)
                write = _refund
            else:
                before = await dispute_reads.recorded(connection, event.psp, event.reference)
                dispute_move = dispute_rules.decide(
                    intent, before, dispute_rules.DisputeReport.of_event(event)
                )
                decision = dispute_move.decision
                write = functools.partial(_dispute, before=before, dispute_move=dispute_move)
            if decision.outcome != psp_rules.Outcome.APPLIED:
                return PspEventResult(decision, intent)
            after = await write(connection, intent, event)
            if after is None:  # the intent's row said otherwise: nothing written
                return PspEventResult(psp_rules.retry("changed_meanwhile"), intent)
            await connection.execute(
                insert(psp_events).values(
                    psp=event.psp,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    kind=event.kind,
                    reference=event.reference or event.psp_reference,
                    payment_intent=intent.id,
                    merchant_id=intent.merchant_id,
                )
            )
        return PspEventResult(decision, after)

    async def _preview_many(self, events: list[PspEvent]) -> list[dict | None]:
        """For each event, its intent's row with `psp_event_seen`; None if none is known."""
        batch = [
            {"n": n, "psp": e.psp, "event_id": e.event_id, "reference": e.psp_reference}
            for n, e in enumerate(events)
        ]
        rows = await self._direct.all(_PSP_EVENT_PREVIEWS, {"events": json.dumps(batch)})
        found = {row.pop("n"): row for row in rows}
        return [found.get(n) for n in range(len(events))]


async def _psp_intent(
    connection: AsyncConnection, event: PspEvent
) -> tuple[PaymentIntent | None, psp_rules.Decision | None]:
    """The intent the PSP's payment is, locked; or why there is none to apply to."""
    row = (
        await connection.execute(
            select(payment_intents)
            .where(
                payment_intents.c.psp == event.psp,
                payment_intents.c.psp_reference == event.psp_reference,
            )
            .with_for_update()
        )
    ).first()
    if row is not None:
        return to_intent(row), None
    # paymesh's attempt keys are `{intent id}:{random}:{psp}`: an authorization of ours
    # whose answer is not recorded yet (it will be, by the request or the sweep).
    intent_id = event.attempt_key.split(":", 1)[0]
    if not (event.attempt_key and validation.id_shaped(intent_id, "pi_")):
        return None, None
    row = (
        await connection.execute(
            select(payment_intents.c.attempt_key, payment_intents.c.psp_reference).where(
                payment_intents.c.id == intent_id
            )
        )
    ).first()
    if row is None or not row.attempt_key or not event.attempt_key.startswith(row.attempt_key):
        return None, None
    if row.psp_reference is None:
        return None, psp_rules.retry("authorization_not_recorded")
    return None, None


async def _refund_match(
    connection: AsyncConnection, intent: PaymentIntent, event: PspEvent
) -> tuple[Refund | None, bool]:
    """paymesh's refund that the PSP's refund is (by the PSP's refund id, or paymesh's own
    refund id that it was created under), and whether another refund of the intent is at
    the PSP with no reference recorded yet."""
    rows = [
        to_refund(row)
        for row in (
            await connection.execute(select(refunds).where(refunds.c.payment_intent == intent.id))
        ).all()
    ]
    matched = next((r for r in rows if r.psp_reference == event.reference), None)
    if matched is None and event.refund_key:
        matched = next((r for r in rows if r.id == event.refund_key), None)
    others = any(
        r.status == RefundStatus.PENDING and r.psp_reference is None and r is not matched
        for r in rows
    )
    return matched, others


async def _write(
    connection: AsyncConnection,
    statement: Any,
    to_value: Callable[[Row], T],
    events: Callable[[T], list[Event]],
    audit: Callable[[T], AuditEntry],
) -> T | None:
    """One write of a PSP event: `statement` (conditional, RETURNING its row), then the
    events and the audit row of the value it wrote; None, with nothing written, if its
    condition no longer held."""
    row = (await connection.execute(statement)).first()
    if row is None:
        return None
    value = to_value(row)
    await record(connection, events(value), audit(value))
    return value


async def _capture(
    connection: AsyncConnection, intent: PaymentIntent, event: PspEvent
) -> PaymentIntent | None:
    details = {
        "amount": event.amount,
        "released": intent.amount_capturable - event.amount,
        **event.audit_details(),
    }
    return await _write(
        connection,
        update(payment_intents)
        .where(
            payment_intents.c.id == intent.id,
            payment_intents.c.status == IntentStatus.REQUIRES_CAPTURE,
            payment_intents.c.pending_operation.is_(None),
        )
        .values(
            status=move(intent.id, intent.status, Action.CAPTURE),
            amount_received=event.amount,
            amount_capturable=0,
            updated_at=func.now(),
        )
        .returning(payment_intents),
        to_intent,
        lambda after: [Event.of_intent("payment_intent.succeeded", after)],
        lambda after: AuditEntry.of_intent(after, "webhook", "capture", "ok", **details),
    )


async def _complete(
    connection: AsyncConnection, intent: PaymentIntent, event: PspEvent
) -> PaymentIntent | None:
    """How the customer's authentication of an intent in requires_action ended, as the
    PSP reports it: charged, authorized or failed."""
    action, values, event_type, result = psp_rules.completion(event.kind, event.amount)
    return await _write(
        connection,
        update(payment_intents)
        .where(
            payment_intents.c.id == intent.id,
            payment_intents.c.status == IntentStatus.REQUIRES_ACTION,
            payment_intents.c.pending_operation.is_(None),
        )
        .values(status=move(intent.id, intent.status, action), **values, updated_at=func.now())
        .returning(payment_intents),
        to_intent,
        lambda after: [Event.of_intent(event_type, after)],
        lambda after: AuditEntry.of_intent(
            after, "webhook", "confirm", result, **event.audit_details()
        ),
    )


async def _refund(
    connection: AsyncConnection, intent: PaymentIntent, event: PspEvent
) -> PaymentIntent | None:
    """A refund made at the PSP, recorded as a succeeded refund of paymesh's."""
    row = (
        await connection.execute(
            update(payment_intents)
            .where(
                payment_intents.c.id == intent.id,
                payment_intents.c.status == IntentStatus.SUCCEEDED,
                payment_intents.c.amount_refunded + event.amount
                <= payment_intents.c.amount_received,
            )
            .values(
                amount_refunded=payment_intents.c.amount_refunded + event.amount,
                updated_at=func.now(),
            )
            .returning(payment_intents)
        )
    ).first()
    if row is None:
        return None

    def audit(refund: Refund) -> AuditEntry:
        entry = AuditEntry.of_refund(refund, "webhook", "refund_at_psp")
        return dataclasses.replace(entry, details={**entry.details, **event.audit_details()})

    await _write(
        connection,
        insert(refunds)
        .values(
            id=new_id("re_"),
            merchant_id=intent.merchant_id,
            livemode=intent.livemode,
            payment_intent=intent.id,
            amount=event.amount,
            currency=intent.currency,
            status=RefundStatus.SUCCEEDED,
            psp_reference=event.reference,
        )
        .returning(refunds),
        to_refund,
        lambda refund: [Event.of_refund("refund.succeeded", refund)],
        audit,
    )
    return to_intent(row)


async def _dispute(
    connection: AsyncConnection,
    intent: PaymentIntent,
    event: PspEvent,
    before: Dispute | None,
    dispute_move: dispute_rules.DisputeMove,
) -> PaymentIntent:
    """A dispute opened or moved on: its row, its audit row and the merchant's events. The
    intent does not change: the dispute's row is the ledger's record of its money."""
    assert dispute_move.status is not None  # an applied move names the status it reaches
    if before is None:
        report = dispute_rules.DisputeReport.of_event(event)
        statement = insert(disputes).values(
            id=new_id("dp_"),
            merchant_id=intent.merchant_id,
            livemode=intent.livemode,
            payment_intent=intent.id,
            amount=report.amount,
            currency=intent.currency,
            reason=report.reason or "general",
            status=dispute_move.status,
            psp=event.psp,
            psp_reference=report.reference,
            evidence_due_by=event.evidence_due_by,
        )
    else:
        statement = (
            update(disputes)
            .where(disputes.c.id == before.id)
            .values(
                status=dispute_move.status,
                updated_at=func.now(),
                evidence_due_by=func.coalesce(event.evidence_due_by, disputes.c.evidence_due_by),
            )
        )

    def events(dispute: Dispute) -> list[Event]:
        return [
            Event.of_intent(event_type, intent)
            if event_type.startswith("payment_intent.")
            else Event.of_dispute(event_type, dispute)
            for event_type in dispute_rules.event_types(dispute_move)
        ]

    action = dispute_rules.audit_action(dispute_move)
    await _write(
        connection,
        statement.returning(disputes),
        to_dispute,
        events,
        lambda dispute: AuditEntry.of_dispute(dispute, "webhook", action, **event.audit_details()),
    )
    return intent


# The intent each PSP event names and whether the event was applied before, for the events
# that arrive together (coalesced: every capture of ours comes back as one): one statement,
# no lock.
_PSP_EVENT_PREVIEWS = text(
    """
    WITH x AS (
      SELECT * FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS x(
        n integer, psp text, event_id text, reference text)
    )
    SELECT x.n, i.*, EXISTS (
        SELECT 1 FROM gateway.psp_events e WHERE e.psp = x.psp AND e.event_id = x.event_id
      ) AS psp_event_seen
    FROM x CROSS JOIN LATERAL (
      SELECT * FROM gateway.payment_intents p
      WHERE p.psp = x.psp AND p.psp_reference = x.reference LIMIT 1
    ) i
    """
)
