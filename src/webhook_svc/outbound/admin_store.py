"""Deliveries as operators see them, across merchants (WebhookAdminService): listed with
their attempts; a dead one sent again (a fresh round of attempts) or dropped, each move as
the delivery status table allows it, in one transaction with its webhook_audit row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Row, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.platform.audit_details import stored_details
from paymesh.platform.db import autocommit
from paymesh.platform.notifications import notify
from paymesh.platform.operators import OPERATOR_ACTOR
from paymesh.platform.problems import FailedPrecondition, NotFound
from webhook_svc.domain.endpoint_health import EndpointStatus
from webhook_svc.domain.status import Action, DeliveryStatus, move, sources
from webhook_svc.outbound.events import WAKE_CHANNEL
from webhook_svc.tables import (
    deliveries,
    delivery_attempts,
    events,
    webhook_audit,
    webhook_endpoints,
)

DELIVERY_PREFIX = "whd_"


@dataclass(frozen=True)
class DeliveryFilter:
    event_id: str = ""
    payment_intent: str = ""
    merchant_id: str = ""


@dataclass(frozen=True)
class DeliveryView:
    """A delivery with its event, endpoint and attempts (oldest first)."""

    row: Row
    attempts: Sequence[Row]


def delivery_id(number: int) -> str:
    return f"{DELIVERY_PREFIX}{number}"


def delivery_number(value: str) -> int | None:
    """The row id a `whd_…` id names (None: it names none)."""
    digits = value.removeprefix(DELIVERY_PREFIX)
    if not value.startswith(DELIVERY_PREFIX) or not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits)


_VIEW = select(
    deliveries.c.id,
    deliveries.c.status,
    deliveries.c.next_attempt_at,
    deliveries.c.endpoint_id,
    events.c.id.label("event_id"),
    events.c.type.label("event_type"),
    events.c.merchant_id,
    events.c.payment_intent,
    events.c.created_at,
    webhook_endpoints.c.url,
    webhook_endpoints.c.status.label("endpoint_status"),
).select_from(
    deliveries.join(events, events.c.id == deliveries.c.event_id).join(
        webhook_endpoints, webhook_endpoints.c.id == deliveries.c.endpoint_id
    )
)


class DeliveryAdmin:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reads = autocommit(engine)

    async def search(self, which: DeliveryFilter, limit: int) -> list[DeliveryView]:
        """Deliveries of the filtered events, newest event first."""
        query = _VIEW
        if which.event_id:
            query = query.where(events.c.id == which.event_id)
        if which.payment_intent:
            query = query.where(events.c.payment_intent == which.payment_intent)
        if which.merchant_id:
            query = query.where(events.c.merchant_id == which.merchant_id)
        query = query.order_by(events.c.created_at.desc(), deliveries.c.id.desc()).limit(limit)
        async with self._reads.connect() as connection:
            return await _with_attempts(connection, (await connection.execute(query)).all())

    async def dead(self, merchant_id: str, limit: int) -> list[DeliveryView]:
        """Deliveries given up on, oldest first."""
        query = _VIEW.where(deliveries.c.status == DeliveryStatus.DEAD)
        if merchant_id:
            query = query.where(events.c.merchant_id == merchant_id)
        query = query.order_by(deliveries.c.id).limit(limit)
        async with self._reads.connect() as connection:
            return await _with_attempts(connection, (await connection.execute(query)).all())

    async def retry(self, number: int, operator: str) -> DeliveryView:
        """A dead delivery due again now, its attempts counted from one again (as a merchant's
        redelivery does); refused for a disabled endpoint, which nothing is sent to."""
        async with self._engine.begin() as connection:
            found = await self._locked(connection, number, Action.RETRY)
            if found.endpoint_status != EndpointStatus.ENABLED:
                raise FailedPrecondition(
                    "the delivery's endpoint is disabled; enable it first",
                    reason="endpoint_disabled",
                )
            status = await self._move(
                connection,
                found,
                Action.RETRY,
                attempts=0,
                next_attempt_at=func.now(),
                lease_token=None,
            )
            await notify(connection, WAKE_CHANNEL, "")
            await _audit(connection, found, "delivery.retry", status, operator)
            return await _view(connection, number)

    async def discard(self, number: int, operator: str) -> DeliveryView:
        async with self._engine.begin() as connection:
            found = await self._locked(connection, number, Action.DISCARD)
            status = await self._move(connection, found, Action.DISCARD)
            await _audit(connection, found, "delivery.discard", status, operator)
            return await _view(connection, number)

    @staticmethod
    async def _locked(connection: AsyncConnection, number: int, action: Action) -> Row:
        found = (
            await connection.execute(
                _VIEW.where(deliveries.c.id == number).with_for_update(of=deliveries)
            )
        ).first()
        if found is None:
            raise NotFound("no such delivery", reason="resource_missing")
        if move(found.status, action) is None:
            raise FailedPrecondition(
                f"the delivery is {found.status}, not dead", reason="delivery_not_dead"
            )
        return found

    @staticmethod
    async def _move(
        connection: AsyncConnection, found: Row, action: Action, **values
    ) -> DeliveryStatus:
        """Moves the locked delivery as the status table says; returns its new status."""
        status = move(found.status, action)
        assert status is not None  # _locked refused a delivery the action does not apply to
        await connection.execute(
            update(deliveries)
            .where(deliveries.c.id == found.id, deliveries.c.status.in_(sources(action)))
            .values(status=status, **values)
        )
        return status


async def _audit(
    connection: AsyncConnection, found: Row, action: str, result: str, operator: str
) -> None:
    """The action's audit row, last in its transaction (the chain's lock is held from the
    insert to the commit)."""
    details, details_z = stored_details(
        {"operator": operator, "event_id": found.event_id, "endpoint_id": found.endpoint_id}
    )
    await connection.execute(
        webhook_audit.insert().values(
            merchant_id=found.merchant_id,
            actor=OPERATOR_ACTOR,
            action=action,
            object_id=delivery_id(found.id),
            result=str(result),
            details=details,
            details_z=details_z,
        )
    )


async def _view(connection: AsyncConnection, number: int) -> DeliveryView:
    row = (await connection.execute(_VIEW.where(deliveries.c.id == number))).one()
    [view] = await _with_attempts(connection, [row])
    return view


async def _with_attempts(connection: AsyncConnection, rows: Sequence[Row]) -> list[DeliveryView]:
    """Each delivery's attempts (an attempt is recorded by event and endpoint), oldest first,
    read in one statement."""
    if not rows:
        return []
    pairs = {(r.event_id, r.endpoint_id) for r in rows}
    found = (
        await connection.execute(
            select(delivery_attempts)
            .where(delivery_attempts.c.event_id.in_({event for event, _ in pairs}))
            .where(tuple_(delivery_attempts.c.event_id, delivery_attempts.c.endpoint_id).in_(pairs))
            .order_by(delivery_attempts.c.at, delivery_attempts.c.id)
        )
    ).all()
    by_pair: dict[tuple[str, str], list[Row]] = {}
    for attempt in found:
        by_pair.setdefault((attempt.event_id, attempt.endpoint_id), []).append(attempt)
    return [DeliveryView(r, by_pair.get((r.event_id, r.endpoint_id), [])) for r in rows]
