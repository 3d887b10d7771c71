"""Payment use cases: create, confirm, capture, cancel, refund, and the recovery of intents
left in `processing` by a crash. Each state change is one transaction with its audit row, its
outbox event and its idempotent answer; no transaction is open during a PSP call."""

from __future__ import annotations

import contextlib
import secrets
import string
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pybreaker
import structlog
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway_svc import rules
from gateway_svc.connectors import Authorization, PspDeclined, PspFailed, PspRetryable
from gateway_svc.idempotency import Claim, Idempotency
from gateway_svc.intent_writes import (
    audit_values,
    finish_statement,
    insert_intent,
    intent_payload,
    prefixed,
)
from gateway_svc.metrics import RECOVERED
from gateway_svc.routing import NoPspAvailable, PspRouter
from gateway_svc.tables import (
    merchants,
    payment_audit,
    payment_intents,
    refunds,
)
from gateway_svc.vault_client import VaultClient
from paymesh.platform.callers import Merchant, owned_by
from paymesh.platform.db import autocommit
from paymesh.platform.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from paymesh.platform.outbox import add_event, event_values

log = structlog.get_logger(__name__)
ROUTE_CACHE_SECONDS = 5.0
_ALPHABET = string.ascii_letters + string.digits


def _ago(seconds: float):
    """SQL for the moment `seconds` before the database's now()."""
    return func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


class Transaction:
    """A transaction whose audit rows are written last, in one statement: the audit chain
    serializes each merchant's rows (a lock taken by the insert trigger), so the lock is then
    held only until the commit that follows."""

    def __init__(self, connection: AsyncConnection):
        self.connection = connection
        self.audits: list[dict[str, Any]] = []

    async def execute(self, *args, **kwargs):
        return await self.connection.execute(*args, **kwargs)

    async def scalar(self, *args, **kwargs):
        return await self.connection.scalar(*args, **kwargs)


@dataclass(frozen=True)
class NewIntent:
    amount: int
    currency: str
    payment_method: str
    capture_method: str
    confirm: bool
    description: str
    metadata: dict[str, str]


class Payments:
    def __init__(
        self,
        engine: AsyncEngine,
        router: PspRouter,
        vault: VaultClient,
        idempotency: Idempotency,
        outbox,
        encode_intent: Callable[[Row], bytes],
        encode_refund: Callable[[Row], bytes],
    ):
        self._engine = engine
        self._router = router
        self._vault = vault
        self._idempotency = idempotency
        self._outbox = outbox
        self._encode_intent = encode_intent
        self._encode_refund = encode_refund
        self._routes: dict[str, tuple[list[str], float]] = {}
        self._writes = autocommit(engine)  # for changes that are one statement

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Transaction]:
        async with self._engine.begin() as connection:
            transaction = Transaction(connection)
            yield transaction
            if transaction.audits:
                await connection.execute(insert(payment_audit), transaction.audits)

    # --- create -------------------------------------------------------------------------

    async def create(self, merchant: Merchant, new: NewIntent, claim: Claim) -> Row:
        rules.validate_new_intent(
            amount=new.amount,
            currency=new.currency,
            capture_method=new.capture_method,
            confirm=new.confirm,
            payment_method=new.payment_method,
            metadata=new.metadata,
        )
        values = {
            "id": new_id("pi_"),
            "merchant_id": merchant.id,
            "livemode": merchant.livemode,
            "amount": new.amount,
            "currency": new.currency,
            "status": "requires_confirmation" if new.payment_method else "requires_payment_method",
            "capture_method": new.capture_method or "automatic",
            "payment_method": new.payment_method or None,
            "description": new.description or None,
            "metadata": new.metadata,
        }
        audits = [audit_values(values, "api", "create", "ok")]
        route: list[str] = []
        if new.confirm:  # created and confirmed in one statement, up to the PSP call
            route = await self._route(merchant)
            values.update(
                status="processing",
                attempt_key=f"{values['id']}:{secrets.token_hex(6)}",
                processing_since=datetime.now(UTC),
                psp=route[0] if route else None,
            )
            audits.append(audit_values(values, "api", "confirm_started", "processing"))
        event = event_values(
            event_type="payment_intent.created",
            aggregate_type="payment_intent",
            aggregate_id=values["id"],
            payload=intent_payload(values),
        )
        async with self._writes.connect() as connection:
            row = await insert_intent(connection, values, event, audits)
        if new.confirm:
            return await self._authorize(merchant, row, route, claim)
        if claim.key:
            async with self._transaction() as connection:
                await self._idempotency.complete(connection, claim, self._encode_intent(row))
        return row

    # --- confirm ------------------------------------------------------------------------

    async def confirm(
        self, merchant: Merchant, intent_id: str, payment_method: str, claim: Claim
    ) -> Row:
        violation = rules.payment_method_violation(payment_method)
        if violation:
            raise InvalidArgument([violation])
        route = await self._route(merchant)
        async with self._transaction() as connection:
            row = await self._locked(connection, intent_id, merchant)
            rules.require_status(intent_id, row.status, rules.CONFIRMABLE, "confirm")
            row = await self._start_confirm(
                connection, row, payment_method or row.payment_method, route
            )
        return await self._authorize(merchant, row, route, claim)

    async def _start_confirm(
        self, connection: AsyncConnection, row: Row, payment_method: str | None, route: list[str]
    ) -> Row:
        """In the caller's transaction: the intent goes to `processing` with a fresh attempt
        key, and the first PSP of the route recorded (where the recovery sweep will look)."""
        if not payment_method:
            raise InvalidArgument.for_field(
                "payment_method", "missing", "attach a payment_method to confirm"
            )
        row = await self._update(
            connection,
            row.id,
            status="processing",
            payment_method=payment_method,
            attempt_key=f"{row.id}:{secrets.token_hex(6)}",
            processing_since=func.now(),
            last_payment_error=None,
            psp=route[0] if route else None,
        )
        await self._audit(connection, row, "api", "confirm_started", "processing")
        return row

    async def _authorize(self, merchant: Merchant, row: Row, route: list[str], claim: Claim) -> Row:
        """The PSP calls, outside any transaction, then the outcome in one transaction."""
        intent_id, attempt_key = row.id, row.attempt_key

        async def card_for(psp: str) -> str:
            return await self._vault.psp_token(
                merchant, row.payment_method, psp, reason=f"authorize {intent_id}"
            )

        async def on_attempt(psp: str) -> None:
            if psp == row.psp:
                return  # recorded when the confirm started
            async with self._transaction() as connection:  # a failover: the sweep looks here
                await connection.execute(
                    update(payment_intents).where(payment_intents.c.id == intent_id).values(psp=psp)
                )

        try:
            psp, authorization = await self._router.authorize(
                route,
                card_for,
                amount=row.amount,
                currency=row.currency,
                capture=row.capture_method == "automatic",
                attempt_key=attempt_key,
                on_attempt=on_attempt,
            )
        except PspDeclined as decline:
            return await self._finish_confirm(row, attempt_key, claim, decline=decline)
        except (NoPspAvailable, PspFailed) as error:
            await self._abandon_confirm(row, attempt_key, str(error))
            raise Unavailable(
                "no payment processor could take this payment now; retry later",
                reason="psp_unavailable",
            ) from None
        return await self._finish_confirm(row, attempt_key, claim, psp, authorization)

    async def _finish_confirm(
        self,
        row: Row,
        attempt_key: str,
        claim: Claim | None,
        psp: str | None = None,
        authorization: Authorization | None = None,
        decline: PspDeclined | None = None,
        actor: str = "api",
    ) -> Row:
        if decline is not None:
            changes: dict[str, Any] = {
                "status": "requires_payment_method",
                "last_payment_error": {
                    "code": "card_declined",
                    "decline_code": decline.decline_code,
                    "message": decline.message,
                    "type": decline.kind,
                },
            }
            event, result = "payment_intent.payment_failed", "declined"
        elif authorization.captured:
            changes = {"status": "succeeded", "amount_received": row.amount}
            event, result = "payment_intent.succeeded", "succeeded"
        else:
            changes = {"status": "requires_capture", "amount_capturable": row.amount}
            event, result = "payment_intent.requires_capture", "authorized"
        changes.setdefault("amount_capturable", 0)
        changes.setdefault("amount_received", 0)
        changes.setdefault("last_payment_error", None)
        if authorization is not None:
            changes.update(psp=psp, psp_reference=authorization.reference)
        outcome = SimpleNamespace(**{**row._mapping, **changes})
        params = {
            "w_id": row.id,
            "w_attempt_key": attempt_key,
            "psp": None,
            "psp_reference": None,
            **changes,
            **prefixed(
                "event_",
                event_values(
                    event_type=event,
                    aggregate_type="payment_intent",
                    aggregate_id=row.id,
                    payload=intent_payload(vars(outcome)),
                ),
            ),
            **prefixed("audit_", audit_values(vars(outcome), actor, "confirm", result)),
        }
        with_claim = claim is not None and claim.key is not None
        if with_claim:
            params.update(
                c_merchant_id=claim.merchant.id,
                c_livemode=claim.merchant.livemode,
                c_key=claim.key,
                c_response=self._encode_intent(outcome),
            )
        async with self._writes.connect() as connection:
            updated = (await connection.execute(finish_statement(with_claim), params)).first()
        if updated is not None:
            return updated
        # The recovery sweep settled it first: answer with what it decided.
        async with self._transaction() as connection:
            current = await self._get(connection, row.id)
            if claim is not None:
                await self._idempotency.complete(connection, claim, self._encode_intent(current))
        return current

    async def _abandon_confirm(self, row: Row, attempt_key: str, why: str) -> None:
        """No PSP took it: nothing was charged, so the intent may be confirmed again."""
        async with self._transaction() as connection:
            updated = (
                await connection.execute(
                    update(payment_intents)
                    .where(
                        payment_intents.c.id == row.id,
                        payment_intents.c.attempt_key == attempt_key,
                        payment_intents.c.status == "processing",
                    )
                    .values(
                        status="requires_confirmation",
                        processing_since=None,
                        last_payment_error={
                            "code": "processing_error",
                            "decline_code": "",
                            "message": "No payment processor was available.",
                            "type": "soft",
                        },
                        updated_at=func.now(),
                    )
                    .returning(payment_intents)
                )
            ).first()
            if updated is not None:
                await self._audit(connection, updated, "api", "confirm", "psp_unavailable", why)

    # --- capture, cancel ----------------------------------------------------------------

    async def capture(
        self, merchant: Merchant, intent_id: str, amount_to_capture: int, claim: Claim
    ) -> Row:
        row = await self._read(intent_id, merchant)
        rules.require_status(intent_id, row.status, rules.CAPTURABLE, "capture")
        amount = rules.capture_amount(amount_to_capture, row.amount_capturable)
        await self._psp_operation(
            row.psp,
            lambda c: c.capture(row.psp_reference, amount, f"{intent_id}:capture"),
        )
        async with self._transaction() as connection:
            updated = (
                await connection.execute(
                    update(payment_intents)
                    .where(
                        payment_intents.c.id == intent_id,
                        payment_intents.c.status == "requires_capture",
                    )
                    .values(
                        status="succeeded",
                        amount_received=amount,
                        amount_capturable=0,
                        updated_at=func.now(),
                    )
                    .returning(payment_intents)
                )
            ).first()
            if updated is None:
                current = await self._get(connection, intent_id)
                rules.require_status(intent_id, current.status, rules.CAPTURABLE, "capture")
            await self._record(
                connection,
                updated,
                "api",
                "capture",
                "payment_intent.succeeded",
                details={"amount": amount, "released": row.amount_capturable - amount},
            )
            await self._idempotency.complete(connection, claim, self._encode_intent(updated))
        return updated

    async def cancel(self, merchant: Merchant, intent_id: str, claim: Claim) -> Row:
        row = await self._read(intent_id, merchant)
        rules.require_status(intent_id, row.status, rules.CANCELABLE, "cancel")
        if row.status == "requires_capture":  # release the authorization at the PSP
            await self._psp_operation(
                row.psp, lambda c: c.void(row.psp_reference, f"{intent_id}:void")
            )
        async with self._transaction() as connection:
            updated = (
                await connection.execute(
                    update(payment_intents)
                    .where(
                        payment_intents.c.id == intent_id,
                        payment_intents.c.status.in_(rules.CANCELABLE),
                    )
                    .values(status="canceled", amount_capturable=0, updated_at=func.now())
                    .returning(payment_intents)
                )
            ).first()
            if updated is None:
                current = await self._get(connection, intent_id)
                rules.require_status(intent_id, current.status, rules.CANCELABLE, "cancel")
            await self._record(connection, updated, "api", "cancel", "payment_intent.canceled")
            await self._idempotency.complete(connection, claim, self._encode_intent(updated))
        return updated

    # --- refunds ------------------------------------------------------------------------

    async def refund(
        self, merchant: Merchant, intent_id: str, amount: int, reason: str, claim: Claim
    ) -> Row:
        if not intent_id.startswith("pi_"):
            raise InvalidArgument.for_field("payment_intent", "invalid_payment_intent", "a pi_… id")
        async with self._transaction() as connection:
            intent = await self._locked(connection, intent_id, merchant, field="payment_intent")
            rules.require_status(intent_id, intent.status, ("succeeded",), "refund")
            amount = rules.refund_amount(
                amount, intent.amount_received, intent.amount_refunded, reason
            )
            # Reserved now, under the intent's lock: concurrent refunds cannot exceed it.
            await self._update(
                connection, intent_id, amount_refunded=intent.amount_refunded + amount
            )
            refund = (
                await connection.execute(
                    insert(refunds)
                    .values(
                        id=new_id("re_"),
                        merchant_id=merchant.id,
                        livemode=merchant.livemode,
                        payment_intent=intent_id,
                        amount=amount,
                        currency=intent.currency,
                        status="pending",
                        reason=reason or None,
                    )
                    .returning(refunds)
                )
            ).one()
            await self._refund_record(connection, refund, "api", "refund_created", "refund.created")
        try:
            reference = await self._psp_operation(
                intent.psp, lambda c: c.refund(intent.psp_reference, amount, refund.id)
            )
        except (Unavailable, FailedPrecondition):
            await self._fail_refund(refund)
            raise
        async with self._transaction() as connection:
            done = (
                await connection.execute(
                    update(refunds)
                    .where(refunds.c.id == refund.id)
                    .values(status="succeeded", psp_reference=reference)
                    .returning(refunds)
                )
            ).one()
            await self._refund_record(connection, done, "api", "refund", "refund.succeeded")
            await self._idempotency.complete(connection, claim, self._encode_refund(done))
        return done

    async def _fail_refund(self, refund: Row) -> None:
        async with self._transaction() as connection:
            failed = (
                await connection.execute(
                    update(refunds)
                    .where(refunds.c.id == refund.id)
                    .values(status="failed")
                    .returning(refunds)
                )
            ).one()
            await connection.execute(
                update(payment_intents)
                .where(payment_intents.c.id == refund.payment_intent)
                .values(amount_refunded=payment_intents.c.amount_refunded - refund.amount)
            )
            await self._refund_record(connection, failed, "api", "refund", "refund.failed")

    async def get_refund(self, merchant: Merchant, refund_id: str) -> Row:
        async with self._engine.connect() as connection:
            row = (await connection.execute(owned_by(refunds, refund_id, merchant))).first()
        if row is None:
            raise NotFound(f"no such refund: {refund_id!r}", reason="resource_missing")
        return row

    # --- recovery -----------------------------------------------------------------------

    async def recover_stuck(self, older_than_seconds: float) -> int:
        """Settles intents left in `processing` (a crash mid PSP call) by asking the PSP."""
        async with self._engine.connect() as connection:
            stuck = (
                await connection.execute(
                    select(payment_intents)
                    .where(
                        payment_intents.c.status == "processing",
                        payment_intents.c.processing_since < _ago(older_than_seconds),
                    )
                    .limit(100)
                )
            ).all()
        for row in stuck:
            authorization = None
            connector = self._router.connectors.get(row.psp or "")
            if connector is not None:
                try:
                    authorization = await connector.find(f"{row.attempt_key}:{row.psp}")
                except (PspRetryable, PspFailed):
                    continue  # ask again next round
            if authorization is not None:
                await self._finish_confirm(
                    row, row.attempt_key, None, row.psp, authorization, actor="worker"
                )
                RECOVERED.labels("authorized").inc()
            else:
                await self._abandon_confirm(row, row.attempt_key, "interrupted; not charged")
                RECOVERED.labels("not_charged").inc()
            log.info("recovered_intent", correlation_id=row.id, found=authorization is not None)
        return len(stuck) + await self._recover_refunds(older_than_seconds)

    async def _recover_refunds(self, older_than_seconds: float) -> int:
        """Refunds left `pending` by a crash: asked again under the same idempotency key (the
        refund's id), so the PSP refunds once whether or not the first call reached it."""
        async with self._engine.connect() as connection:
            pending = (
                await connection.execute(
                    select(
                        refunds,
                        payment_intents.c.psp,
                        payment_intents.c.psp_reference.label("charge_reference"),
                    )
                    .join(payment_intents, payment_intents.c.id == refunds.c.payment_intent)
                    .where(
                        refunds.c.status == "pending",
                        refunds.c.created_at < _ago(older_than_seconds),
                    )
                    .limit(100)
                )
            ).all()
        for refund in pending:
            try:
                reference = await self._psp_operation(
                    refund.psp,
                    lambda c, r=refund: c.refund(r.charge_reference, r.amount, r.id),
                )
            except FailedPrecondition:
                await self._fail_refund(refund)
                RECOVERED.labels("refund_failed").inc()
                continue
            except Unavailable:
                continue  # ask again next round
            async with self._transaction() as connection:
                done = (
                    await connection.execute(
                        update(refunds)
                        .where(refunds.c.id == refund.id, refunds.c.status == "pending")
                        .values(status="succeeded", psp_reference=reference)
                        .returning(refunds)
                    )
                ).first()
                if done is not None:
                    await self._refund_record(
                        connection, done, "worker", "refund", "refund.succeeded"
                    )
            RECOVERED.labels("refund_succeeded").inc()
        return len(pending)

    # --- helpers ------------------------------------------------------------------------

    async def _psp_operation(self, psp: str | None, operation):
        connector = self._router.connectors.get(psp or "")
        if connector is None:
            raise FailedPrecondition("this payment has no PSP reference", reason="no_psp")
        try:
            return await self._router.call(psp, lambda: operation(connector))
        except PspFailed as error:
            raise FailedPrecondition(f"{psp} refused: {error}", reason="psp_refused") from None
        except (PspRetryable, pybreaker.CircuitBreakerError):
            raise Unavailable(f"{psp} is unavailable; retry", reason="psp_unavailable") from None

    async def _route(self, merchant: Merchant) -> list[str]:
        """The merchant's PSPs in order; remembered for a few seconds (routing rarely changes)."""
        cached = self._routes.get(merchant.id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        async with self._engine.connect() as connection:
            route = await connection.scalar(
                select(merchants.c.psp_routing).where(merchants.c.id == merchant.id)
            )
        route = [psp for psp in route or [] if psp in self._router.connectors]
        self._routes[merchant.id] = (route, time.monotonic() + ROUTE_CACHE_SECONDS)
        return route

    async def _read(self, intent_id: str, merchant: Merchant) -> Row:
        async with self._engine.connect() as connection:
            return await self._scoped(connection, intent_id, merchant)

    async def _locked(
        self, connection: AsyncConnection, intent_id: str, merchant: Merchant, field: str = "id"
    ) -> Row:
        return await self._scoped(connection, intent_id, merchant, lock=True, field=field)

    @staticmethod
    async def _scoped(
        connection, intent_id: str, merchant: Merchant, lock: bool = False, field: str = "id"
    ) -> Row:
        query = owned_by(payment_intents, intent_id, merchant)
        row = (await connection.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            raise NotFound(f"no such payment_intent: {intent_id!r}", reason="resource_missing")
        return row

    @staticmethod
    async def _get(connection: AsyncConnection, intent_id: str) -> Row:
        return (
            await connection.execute(
                select(payment_intents).where(payment_intents.c.id == intent_id)
            )
        ).one()

    @staticmethod
    async def _update(connection: AsyncConnection, intent_id: str, **values) -> Row:
        return (
            await connection.execute(
                update(payment_intents)
                .where(payment_intents.c.id == intent_id)
                .values(**values, updated_at=func.now())
                .returning(payment_intents)
            )
        ).one()

    async def _record(
        self,
        connection: AsyncConnection,
        row: Row,
        actor: str,
        action: str,
        event: str,
        result: str = "ok",
        details: dict | None = None,
    ) -> None:
        await self._audit(connection, row, actor, action, result, details=details)
        await add_event(
            connection,
            self._outbox,
            event_type=event,
            aggregate_type="payment_intent",
            aggregate_id=row.id,
            payload=intent_payload(row),
        )

    async def _refund_record(
        self, connection: Transaction, refund: Row, actor: str, action: str, event: str
    ) -> None:
        connection.audits.append(
            {
                "merchant_id": refund.merchant_id,
                "actor": actor,
                "action": action,
                "object_id": refund.id,
                "result": refund.status,
                "details": {"payment_intent": refund.payment_intent, "amount": refund.amount},
            }
        )
        await add_event(
            connection,
            self._outbox,
            event_type=event,
            aggregate_type="refund",
            aggregate_id=refund.id,
            payload={
                "merchant_id": refund.merchant_id,
                "livemode": refund.livemode,
                "payment_intent": refund.payment_intent,
                "amount": refund.amount,
                "currency": refund.currency,
                "status": refund.status,
            },
        )

    @staticmethod
    async def _audit(
        connection: Transaction,
        row: Row,
        actor: str,
        action: str,
        result: str,
        why: str | None = None,
        details: dict | None = None,
    ) -> None:
        connection.audits.append(
            {
                "merchant_id": row.merchant_id,
                "actor": actor,
                "action": action,
                "object_id": row.id,
                "result": result,
                "details": {
                    "status": row.status,
                    "amount": row.amount,
                    **(details or {}),
                    **({"why": why} if why else {}),
                },
            }
        )
