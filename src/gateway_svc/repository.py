"""Every SQL statement of gateway_svc's payments: intents, refunds, their audit rows, outbox
events and the idempotency keys bound to them. No protobuf, no PSP here.

Each state change is ONE conditional statement (or one short transaction): the change itself,
its audit row(s), its outbox event and its idempotency key, written together or not at all.
The condition (`IntentChange.statuses` from the transition table, and the key of the PSP
operation it settles) makes a late or repeated writer a no-op instead of a double write.
Statements are built once per shape and cached: compiling them on every call cost more than
running them."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from sqlalchemy import (
    Row,
    String,
    and_,
    any_,
    bindparam,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway_svc import dispute_store
from gateway_svc.domain import disputes as dispute_rules
from gateway_svc.domain import psp_events as psp_rules
from gateway_svc.domain import validation
from gateway_svc.domain.models import AuditEntry, Dispute, Event, PaymentIntent, Refund, new_id
from gateway_svc.domain.status import Action, IntentStatus, RefundStatus, move
from gateway_svc.tables import (
    disputes,
    idempotency_keys,
    merchants,
    outbox,
    payment_audit,
    payment_intents,
    psp_events,
    refunds,
    revoked_payment_methods,
)
from paymesh.platform.callers import (
    Merchant,
    newest_first_page,
    owned_by,
    owned_by_params,
    owner_params,
)
from paymesh.platform.coalesce import Coalescer
from paymesh.platform.db import autocommit, constant
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.outbox import event_values, snapshot, snapshot_column
from paymesh.platform.problems import NotFound

_INTENT_FIELDS = tuple(PaymentIntent.__dataclass_fields__)
_REFUND_FIELDS = tuple(Refund.__dataclass_fields__)
_EVENT_COLUMNS = ("event_id", "event_type", "aggregate_type", "aggregate_id", "payload", "headers")
_AUDIT_COLUMNS = ("merchant_id", "actor", "action", "object_id", "result", "details")
_INSERTED_INTENT_COLUMNS = (
    "id",
    "merchant_id",
    "livemode",
    "amount",
    "currency",
    "status",
    "capture_method",
    "payment_method",
    "description",
    "metadata",
    "psp",
    "attempt_key",
    "pending_operation",
    "pending_key",
    "pending_since",
    "return_url",
)


def to_intent(row: Row | dict[str, Any]) -> PaymentIntent:
    values = row if isinstance(row, dict) else row._mapping
    return PaymentIntent(**{name: values[name] for name in _INTENT_FIELDS})


def to_refund(row: Row | dict[str, Any]) -> Refund:
    values = row if isinstance(row, dict) else row._mapping
    return Refund(**{name: values[name] for name in _REFUND_FIELDS})


@dataclass(frozen=True)
class KeyRef:
    """An idempotency key of a merchant (the request that holds it). `done`: binding it to
    its object also ends it (the object's outcome is known), else it waits for the outcome."""

    merchant: Merchant
    key: str
    done: bool = False


@dataclass
class IntentChange:
    """One conditional change of an intent: applied only while the intent is in one of
    `statuses` (and, when given, its PSP operation in flight is `pending_key`, or none is
    in flight with `no_pending`, or its last attempt is `attempt_key`)."""

    intent: PaymentIntent  # as read before; the change's audit and event describe `after`
    values: dict[str, Any]
    statuses: Sequence[str]
    audits: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    event: str | None = None
    pending_key: str | None = None
    attempt_key: str | None = None
    no_pending: bool = False
    bind: KeyRef | None = None  # the request's key now answers with this intent
    settles: bool = False  # the change settles a PSP operation: keys waiting on it are done

    @property
    def after(self) -> PaymentIntent:
        return self.intent.replace(**self.values)


class PaymentRepository:
    """`direct`: the statements of the payment path (reads by id, the intent's insert and
    changes, key bindings) run straight on psycopg; transactions of several statements and
    the sweep's scans go through the engine."""

    def __init__(self, engine: AsyncEngine, direct: DirectSql):
        self._engine = engine
        self._autocommit = autocommit(engine)
        self._direct = direct
        self._previews = Coalescer(self._preview_many)

    # --- reads ---------------------------------------------------------------------------

    async def intent(self, intent_id: str, merchant: Merchant | None = None) -> PaymentIntent:
        """The intent (the merchant's, in its mode, when given); NotFound otherwise."""
        return to_intent(await self._one(payment_intents, intent_id, merchant))

    async def refund(self, refund_id: str, merchant: Merchant | None = None) -> Refund:
        return to_refund(await self._one(refunds, refund_id, merchant))

    async def _one(self, table, object_id: str, merchant: Merchant | None) -> dict[str, Any]:
        if merchant is None:
            row = await self._direct.one(_select_by_id(table), {"o_id": object_id})
        else:
            params = owner_params("o_", object_id, merchant)
            row = await self._direct.one(_select_owned(table), params)
        if row is None:
            raise _missing(table, object_id)
        return row

    async def page(
        self, merchant: Merchant, limit: int, starting_after: str
    ) -> tuple[list[PaymentIntent], bool]:
        """Newest first; the page after `starting_after` (an id of the merchant's) if given."""
        async with self._autocommit.connect() as connection:
            rows, has_more = await newest_first_page(
                connection, payment_intents, merchant, limit, starting_after, "payment_intent"
            )
        return [to_intent(row) for row in rows], has_more

    async def psp_route(self, merchant_id: str) -> list[str]:
        row = await self._direct.one(_PSP_ROUTE, {"m_id": merchant_id})
        return list((row or {}).get("psp_routing") or [])

    async def pending_intents(self, older_than_seconds: float, limit: int = 100):
        """Intents whose PSP operation went out more than `older_than_seconds` ago and whose
        outcome is still not recorded."""
        async with self._autocommit.connect() as connection:
            rows = (
                await connection.execute(
                    select(payment_intents)
                    .where(
                        payment_intents.c.pending_operation.is_not(None),
                        payment_intents.c.pending_since < _ago(older_than_seconds),
                    )
                    .order_by(payment_intents.c.pending_since)
                    .limit(limit)
                )
            ).all()
        return [to_intent(row) for row in rows]

    async def pending_refunds(
        self, older_than_seconds: float, limit: int = 100
    ) -> list[tuple[Refund, PaymentIntent]]:
        async with self._autocommit.connect() as connection:
            rows = (
                await connection.execute(
                    select(refunds, payment_intents)
                    .join(payment_intents, payment_intents.c.id == refunds.c.payment_intent)
                    .where(
                        refunds.c.status == constant(RefundStatus.PENDING),
                        refunds.c.created_at < _ago(older_than_seconds),
                    )
                    .order_by(refunds.c.created_at)
                    .limit(limit)
                )
            ).all()
        pairs = []
        for row in rows:
            values = row._mapping
            refund = Refund(**{name: values[refunds.c[name]] for name in _REFUND_FIELDS})
            intent = PaymentIntent(
                **{name: values[payment_intents.c[name]] for name in _INTENT_FIELDS}
            )
            pairs.append((refund, intent))
        return pairs

    # --- intent writes -------------------------------------------------------------------

    async def insert_intent(
        self,
        intent: PaymentIntent,
        audits: list[AuditEntry],
        event: Event,
        bind: KeyRef | None,
    ) -> PaymentIntent:
        """A new intent, its audit rows, its event and its key's binding in ONE statement."""
        inserted = await self._insert_intent(intent, audits, event, bind, unless_revoked=False)
        assert inserted is not None  # an INSERT … RETURNING returns its row or raises
        return inserted

    async def insert_intent_unless_revoked(
        self,
        intent: PaymentIntent,
        audits: list[AuditEntry],
        event: Event,
        bind: KeyRef | None,
    ) -> PaymentIntent | None:
        """As insert_intent, in the same one statement, unless the intent's payment method was
        revoked: then nothing is written and the answer is None."""
        return await self._insert_intent(intent, audits, event, bind, unless_revoked=True)

    async def _insert_intent(
        self,
        intent: PaymentIntent,
        audits: list[AuditEntry],
        event: Event,
        bind: KeyRef | None,
        unless_revoked: bool,
    ) -> PaymentIntent | None:
        params = {f"i_{name}": getattr(intent, name) for name in _INSERTED_INTENT_COLUMNS}
        params.update(_prefixed("event_", _event_envelope(event)))
        for i, audit in enumerate(audits):
            params.update(_prefixed(f"audit{i}_", audit_values(audit)))
        if bind is not None:
            params.update(_key_params(bind))
        statement = _insert_intent_statement(len(audits), bind is not None, unless_revoked)
        row = await self._direct.one(statement, params)
        return None if row is None else to_intent(row)

    async def change_intent(self, change: IntentChange) -> PaymentIntent | None:
        """Applies `change` in one statement; None if its condition no longer held."""
        after = change.after
        params: dict[str, Any] = {
            "w_id": change.intent.id,
            "w_statuses": [str(status) for status in change.statuses],
            **{f"v_{name}": value for name, value in change.values.items()},
        }
        if change.pending_key is not None:
            params["w_pending_key"] = change.pending_key
        if change.attempt_key is not None:
            params["w_attempt_key"] = change.attempt_key
        for i, (actor, action, result, details) in enumerate(change.audits):
            entry = AuditEntry.of_intent(after, actor, action, result, **details)
            params.update(_prefixed(f"audit{i}_", audit_values(entry)))
        if change.event is not None:
            event = Event.of_intent(change.event, after)
            params.update(_prefixed("event_", _event_envelope(event)))
        if change.bind is not None:
            params.update(_key_params(change.bind))
        if change.settles:
            params["s_merchant_id"] = change.intent.merchant_id
        statement = _change_statement(
            tuple(change.values),
            pending_key=change.pending_key is not None,
            attempt_key=change.attempt_key is not None,
            no_pending=change.no_pending,
            audits=len(change.audits),
            event=change.event is not None,
            bind=change.bind is not None,
            settles=change.settles,
        )
        row = await self._direct.one(statement, params)
        return None if row is None else to_intent(row)

    async def audit(self, entry: AuditEntry) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(insert(payment_audit), [audit_values(entry)])

    # --- refunds -------------------------------------------------------------------------

    async def reserve_refund(
        self,
        merchant: Merchant,
        intent_id: str,
        requested: int,
        reason: str,
        refund_id: str,
        bind: KeyRef | None,
    ) -> tuple[PaymentIntent, Refund]:
        """Reserves the refund's amount under the intent's lock (concurrent refunds can never
        exceed what was captured) and records the refund `pending`, in one transaction."""
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    owned_by(payment_intents, intent_id, merchant).with_for_update()
                )
            ).first()
            if row is None:
                raise _missing(payment_intents, intent_id)
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
            await self._record_refund(connection, refund, "api", "refund_created", "refund.created")
            if bind is not None:
                await connection.execute(_BIND_KEY, {**_key_params(bind), "k_object_id": refund.id})
        return intent, refund

    async def finish_refund(
        self, refund: Refund, status: RefundStatus, psp_reference: str | None, actor: str
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
            await self._record_refund(connection, done, actor, "refund", event)
            await connection.execute(_settle_keys(done.merchant_id, done.id))
        return done

    async def _record_refund(
        self, connection: AsyncConnection, refund: Refund, actor: str, action: str, event: str
    ) -> None:
        await connection.execute(insert(outbox), [_event_values(Event.of_refund(event, refund))])
        await connection.execute(
            insert(payment_audit), [audit_values(AuditEntry.of_refund(refund, actor, action))]
        )

    # --- PSP events (webhooks) ------------------------------------------------------------

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
            intent, not_yet = await self._psp_intent(connection, event)
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
                write = self._psp_complete if waiting else self._psp_capture
            elif event.kind in ("authorized", "failed"):
                decision = psp_rules.authentication_ended(
                    intent, event.kind, event.amount, event.currency
                )
                write = self._psp_complete
            elif event.kind == "refund":
                matched, others = await self._psp_refund_match(connection, intent, event)
                decision = psp_rules.refund(intent, matched, event.amount, event.currency, others)
                write = self._psp_refund
            else:
                before = await dispute_store.recorded(connection, event.psp, event.reference)
                move = dispute_rules.decide(intent, before, event.dispute_report())
                decision = move.decision
                write = functools.partial(self._psp_dispute, before=before, move=move)
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
        self, connection: AsyncConnection, event: PspEvent
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

    async def _psp_refund_match(
        self, connection: AsyncConnection, intent: PaymentIntent, event: PspEvent
    ) -> tuple[Refund | None, bool]:
        """paymesh's refund that the PSP's refund is (by the PSP's refund id, or paymesh's own
        refund id that it was created under), and whether another refund of the intent is at
        the PSP with no reference recorded yet."""
        rows = [
            to_refund(row)
            for row in (
                await connection.execute(
                    select(refunds).where(refunds.c.payment_intent == intent.id)
                )
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

    async def _psp_capture(
        self, connection: AsyncConnection, intent: PaymentIntent, event: PspEvent
    ) -> PaymentIntent | None:
        row = (
            await connection.execute(
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
                .returning(payment_intents)
            )
        ).first()
        if row is None:
            return None
        after = to_intent(row)
        await connection.execute(
            insert(outbox), [_event_values(Event.of_intent("payment_intent.succeeded", after))]
        )
        details = {
            "amount": event.amount,
            "released": intent.amount_capturable - event.amount,
            **event.audit_details(),
        }
        entry = AuditEntry.of_intent(after, "webhook", "capture", "ok", **details)
        await connection.execute(insert(payment_audit), [audit_values(entry)])
        return after

    async def _psp_complete(
        self, connection: AsyncConnection, intent: PaymentIntent, event: PspEvent
    ) -> PaymentIntent | None:
        """How the customer's authentication of an intent in requires_action ended, as the
        PSP reports it: charged, authorized or failed."""
        action, values, event_type, result = psp_rules.completion(event.kind, event.amount)
        row = (
            await connection.execute(
                update(payment_intents)
                .where(
                    payment_intents.c.id == intent.id,
                    payment_intents.c.status == IntentStatus.REQUIRES_ACTION,
                    payment_intents.c.pending_operation.is_(None),
                )
                .values(
                    status=move(intent.id, intent.status, action), **values, updated_at=func.now()
                )
                .returning(payment_intents)
            )
        ).first()
        if row is None:
            return None
        after = to_intent(row)
        await connection.execute(
            insert(outbox), [_event_values(Event.of_intent(event_type, after))]
        )
        entry = AuditEntry.of_intent(after, "webhook", "confirm", result, **event.audit_details())
        await connection.execute(insert(payment_audit), [audit_values(entry)])
        return after

    async def _psp_refund(
        self, connection: AsyncConnection, intent: PaymentIntent, event: PspEvent
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
        refund = to_refund(
            (
                await connection.execute(
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
                    .returning(refunds)
                )
            ).one()
        )
        await connection.execute(
            insert(outbox), [_event_values(Event.of_refund("refund.succeeded", refund))]
        )
        entry = AuditEntry.of_refund(refund, "webhook", "refund_at_psp")
        entry = AuditEntry(
            entry.merchant_id,
            entry.actor,
            entry.action,
            entry.object_id,
            entry.result,
            {**entry.details, **event.audit_details()},
        )
        await connection.execute(insert(payment_audit), [audit_values(entry)])
        return to_intent(row)

    async def _psp_dispute(
        self,
        connection: AsyncConnection,
        intent: PaymentIntent,
        event: PspEvent,
        before: Dispute | None,
        move: dispute_rules.DisputeMove,
    ) -> PaymentIntent:
        """A dispute opened or moved on: its row, its audit row and the merchant's events. The
        intent does not change: the dispute's row is the ledger's record of its money."""
        assert move.status is not None  # an applied move names the status it reaches
        report = event.dispute_report()
        if before is None:
            statement = insert(disputes).values(
                id=new_id("dp_"),
                merchant_id=intent.merchant_id,
                livemode=intent.livemode,
                payment_intent=intent.id,
                amount=report.amount,
                currency=intent.currency,
                reason=report.reason or "general",
                status=move.status,
                psp=event.psp,
                psp_reference=report.reference,
            )
        else:
            statement = (
                update(disputes)
                .where(disputes.c.id == before.id)
                .values(status=move.status, updated_at=func.now())
            )
        row = (await connection.execute(statement.returning(disputes))).one()
        dispute = dispute_store.to_dispute(row)
        events = [
            Event.of_intent(event_type, intent)
            if event_type.startswith("payment_intent.")
            else Event.of_dispute(event_type, dispute)
            for event_type in dispute_rules.event_types(move)
        ]
        await connection.execute(insert(outbox), [_event_values(e) for e in events])
        action = dispute_rules.audit_action(move)
        entry = AuditEntry.of_dispute(dispute, "webhook", action, **event.audit_details())
        await connection.execute(insert(payment_audit), [audit_values(entry)])
        return intent

    # --- payment methods the vault revoked -----------------------------------------------

    async def revoke_payment_method(self, merchant: Merchant, payment_method: str) -> None:
        await self._direct.one(
            _REVOKE,
            {"r_pm": payment_method, "r_merchant": merchant.id, "r_livemode": merchant.livemode},
        )

    async def payment_method_revoked(self, payment_method: str) -> bool:
        return await self._direct.one(_REVOKED, {"r_pm": payment_method}) is not None

    # --- idempotency keys ----------------------------------------------------------------

    async def complete_key(self, key: KeyRef, object_id: str) -> None:
        """The request's answer is its object, as it is whenever it is asked for again."""
        done = _key_params(KeyRef(key.merchant, key.key, done=True))
        await self._direct.one(_BIND_KEY, {**done, "k_object_id": object_id})


@dataclass(frozen=True)
class PspEvent:
    """One PSP event, as the webhook service read it. `kind`: capture | refund | dispute |
    authorized | failed (how a customer's authentication ended); `reference`: the PSP's
    refund or dispute id; `amount`: captured, refunded, disputed or authorized."""

    psp: str
    event_id: str
    event_type: str
    kind: str
    psp_reference: str
    amount: int
    currency: str = ""
    attempt_key: str = ""
    reference: str = ""
    refund_key: str = ""
    reason: str = ""
    status: str = ""  # a dispute's status, as the PSP names it

    def audit_details(self) -> dict[str, Any]:
        return {"psp": self.psp, "psp_event": self.event_id, "psp_event_type": self.event_type}

    def dispute_report(self) -> dispute_rules.DisputeReport:
        return dispute_rules.DisputeReport(
            self.reference, self.amount, self.currency, self.reason, self.status
        )


@dataclass(frozen=True)
class PspEventResult:
    decision: Any  # psp_rules.Decision
    intent: PaymentIntent | None = None


@functools.cache
def _select_by_id(table):
    return select(table).where(table.c.id == bindparam("o_id"))


@functools.cache
def _select_owned(table):
    return select(table).where(*owned_by_params(table, "o_"))


_REVOKE = (
    pg_insert(revoked_payment_methods)
    .values(
        payment_method=bindparam("r_pm"),
        merchant_id=bindparam("r_merchant"),
        livemode=bindparam("r_livemode"),
    )
    .on_conflict_do_nothing()
)
_REVOKED = select(revoked_payment_methods.c.payment_method).where(
    revoked_payment_methods.c.payment_method == bindparam("r_pm")
)
_PSP_ROUTE = select(merchants.c.psp_routing).where(merchants.c.id == bindparam("m_id"))


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


def _missing(table, object_id: str) -> NotFound:
    noun = {"payment_intents": "payment_intent", "refunds": "refund"}[table.name]
    return NotFound(f"no such {noun}: {object_id!r}", reason="resource_missing")


def _ago(seconds: float):
    """SQL for the moment `seconds` before the database's now()."""
    return func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def _prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{name}": value for name, value in values.items()}


def _event_values(event: Event) -> dict[str, Any]:
    """The event's outbox row, its subject's row in it (see paymesh.platform.outbox)."""
    return {**_event_envelope(event), "payload": snapshot(dataclasses.asdict(event.subject))}


def _event_envelope(event: Event) -> dict[str, Any]:
    """The event's outbox row but its payload, which a statement takes from the row it
    writes (see _side_effects)."""
    values = event_values(
        event_type=event.type,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
        payload={},
    )
    del values["payload"]
    return values


def audit_values(entry: AuditEntry) -> dict[str, Any]:
    """A payment_audit row's columns; its details carry the trace of the request that wrote
    it (the current OpenTelemetry span's trace id), when there is one."""
    values = {name: getattr(entry, name) for name in _AUDIT_COLUMNS}
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        values["details"] = {
            **values["details"],
            "trace_id": format(span_context.trace_id, "032x"),
        }
    return values


def _key_params(bind: KeyRef) -> dict[str, Any]:
    return {
        "k_merchant_id": bind.merchant.id,
        "k_livemode": bind.merchant.livemode,
        "k_key": bind.key,
        "k_state": "done" if bind.done else "running",
    }


def _key_where():
    keys = idempotency_keys.c
    return and_(
        keys.merchant_id == bindparam("k_merchant_id"),
        keys.livemode == bindparam("k_livemode"),
        keys.key == bindparam("k_key"),
    )


_BIND_KEY = (
    update(idempotency_keys)
    .where(_key_where())
    .values(object_id=bindparam("k_object_id"), state=bindparam("k_state"))
)


def _settle_keys(merchant_id: str, object_id: str):
    """Keys whose request died (or answered) before its object's outcome was known are
    done now: a retry answers with the object as it is."""
    keys = idempotency_keys.c
    return (
        update(idempotency_keys)
        .where(
            keys.merchant_id == merchant_id,
            keys.object_id == object_id,
            keys.state == constant("running"),
        )
        .values(state="done")
    )


# Every parameter name carries a prefix: an UPDATE in a statement would take a parameter named
# like one of its columns as a value to SET.
def _typed(prefix: str, table, names):
    return [bindparam(f"{prefix}{name}", type_=table.c[name].type).label(name) for name in names]


def _side_effects(target, audits: int, event: bool):
    """INSERTs of the event and the audit rows, each selecting FROM `target` (so they happen
    only if it wrote a row); the event carries `target`'s row as written; audit rows chained
    one after the other, so their order in the merchant's audit chain follows the actions'
    order."""
    ctes = []
    if event:
        envelope = [name for name in _EVENT_COLUMNS if name != "payload"]
        ctes.append(
            insert(outbox)
            .from_select(
                [*envelope, "payload"],
                select(
                    *_typed("event_", outbox, envelope), snapshot_column(target.name)
                ).select_from(target),
            )
            .cte("event")
        )
    previous = target
    for i in range(audits):
        previous = (
            insert(payment_audit)
            .from_select(
                list(_AUDIT_COLUMNS),
                select(*_typed(f"audit{i}_", payment_audit, _AUDIT_COLUMNS)).select_from(previous),
            )
            .returning(payment_audit.c.id)
            .cte(f"audit{i}")
        )
        ctes.append(previous)
    return ctes


@functools.cache
def _insert_intent_statement(audits: int, bind: bool, unless_revoked: bool):
    values = select(
        *[
            bindparam(f"i_{name}", type_=payment_intents.c[name].type).label(name)
            for name in _INSERTED_INTENT_COLUMNS
        ]
    )
    if unless_revoked:
        revoked = revoked_payment_methods.c
        values = values.where(
            ~exists().where(revoked.payment_method == bindparam("i_payment_method"))
        )
    intent = (
        insert(payment_intents)
        .from_select(list(_INSERTED_INTENT_COLUMNS), values)
        .returning(payment_intents)
        .cte("intent")
    )
    ctes = _side_effects(intent, audits, event=True)
    if bind:
        ctes.append(
            update(idempotency_keys)
            .where(_key_where(), exists(select(intent.c.id)))
            .values(object_id=select(intent.c.id).scalar_subquery(), state=bindparam("k_state"))
            .cte("bound")
        )
    return select(intent).add_cte(*ctes)


@functools.cache
def _change_statement(
    columns: tuple[str, ...],
    *,
    pending_key: bool,
    attempt_key: bool,
    no_pending: bool,
    audits: int,
    event: bool,
    bind: bool,
    settles: bool,
):
    intents = payment_intents.c
    conditions = [
        intents.id == bindparam("w_id"),
        # = ANY(array), not IN: an expanding IN would be rendered again on every call.
        intents.status == any_(bindparam("w_statuses", type_=ARRAY(String))),
    ]
    if pending_key:
        conditions.append(intents.pending_key == bindparam("w_pending_key"))
    if attempt_key:
        conditions.append(intents.attempt_key == bindparam("w_attempt_key"))
    if no_pending:
        conditions.append(intents.pending_operation.is_(None))
    values = {name: bindparam(f"v_{name}", type_=payment_intents.c[name].type) for name in columns}
    intent = (
        update(payment_intents)
        .where(*conditions)
        .values(**values, updated_at=func.now())
        .returning(payment_intents)
        .cte("intent")
    )
    ctes = _side_effects(intent, audits, event)
    keys = idempotency_keys.c
    if bind:
        ctes.append(
            update(idempotency_keys)
            .where(_key_where(), exists(select(intent.c.id)))
            .values(object_id=bindparam("w_id"), state=bindparam("k_state"))
            .cte("bound")
        )
    if settles:
        # Not the request's own key when it is bound here too: one statement may not update
        # the same row twice.
        mine = [keys.key != bindparam("k_key")] if bind else []
        ctes.append(
            update(idempotency_keys)
            .where(
                keys.merchant_id == bindparam("s_merchant_id"),
                keys.object_id == bindparam("w_id"),
                keys.state == constant("running"),
                exists(select(intent.c.id)),
                *mine,
            )
            .values(state="done")
            .cte("settled")
        )
    return select(intent).add_cte(*ctes)
