"""Rows every rebill transaction writes beside its change: the audit row and the outbox
events (domain events, and the job messages the outbox relay publishes to the queues)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from paymesh.platform.audit_details import stored_details
from paymesh.platform.ids import new_id  # noqa: F401 - rebill's modules make ids through here
from paymesh.platform.notifications import notify
from paymesh.platform.outbox import add_event, event_values, snapshot
from paymesh.platform.tracing import tracer
from rebill_svc.tables import outbox, rebill_audit

# Job messages go out through the outbox like events, under their own routing keys: a
# consumer of `rebill.*` events never receives them.
JOB_ROUTING_PREFIX = "rebill_job."


# Sent when something may have fallen due: a period settled (the payload names its
# subscription: only that one's next period can be due), a clock moved or a subscription
# resumed (no payload: anything may be). The scheduler's leader wakes at once instead of at
# its next round.
WAKE_CHANNEL = "rebill_scheduler"


async def wake_scheduler(connection: AsyncConnection) -> None:
    """Wakes the scheduler for a full round when `connection`'s transaction commits."""
    await notify(connection, WAKE_CHANNEL, "")


def job_routing_key(queue: str) -> str:
    return JOB_ROUTING_PREFIX + queue.removeprefix("rebill.")


def audit_values(
    *, merchant_id: str, actor: str, action: str, object_id: str, result: str, **details: Any
) -> dict[str, Any]:
    return {
        "merchant_id": merchant_id,
        "actor": actor,
        "action": action,
        "object_id": object_id,
        "result": result,
        **dict(zip(("details", "details_z"), stored_details(details), strict=True)),
    }


async def audit(connection: AsyncConnection, **entry: Any) -> None:
    """One audit row (see audit_values). Insert it last in its transaction: the database's
    chain trigger holds a lock on the merchant's chain from the insert to the commit."""
    await connection.execute(rebill_audit.insert(), [audit_values(**entry)])


# Many rows in one statement with one parameter: a statement per row cost the database more
# than the rows (a scheduler's batch writes hundreds), and a VALUES list of hundreds of rows
# cost more to compile and send than the rows themselves.
_AUDIT_ROWS = text(
    """
    INSERT INTO rebill.rebill_audit (merchant_id, actor, action, object_id, result, details,
      details_z)
    SELECT merchant_id, actor, action, object_id, result, details, decode(details_z, 'hex')
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
      merchant_id text, actor text, action text, object_id text, result text, details jsonb,
      details_z text)
    """
)
_OUTBOX_ROWS = text(
    """
    INSERT INTO rebill.outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers)
    SELECT event_id, event_type, aggregate_type, aggregate_id, payload, headers
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
      event_id text, event_type text, aggregate_type text, aggregate_id text, payload jsonb,
      headers jsonb)
    """
)


async def audit_many(connection: AsyncConnection, entries: list[dict[str, Any]]) -> None:
    if entries:
        rows = [
            {**entry, "details_z": entry["details_z"].hex() if entry.get("details_z") else None}
            for entry in entries
        ]
        await connection.execute(_AUDIT_ROWS, {"rows": json.dumps(rows)})


async def event(connection: AsyncConnection, event_type: str, object_type: str, row) -> None:
    """A domain event about the object whose row (a subscription's, or a job's: a renewal)
    the change left as `row`; the relay shows it as the API does (EVENT_OBJECTS). The worker's
    settle (jobs.statements.SETTLE) writes its events in SQL the same way."""
    await add_event(
        connection,
        outbox,
        event_type=event_type,
        aggregate_type=object_type,
        aggregate_id=row.id,
        payload=snapshot(row._mapping),
    )


async def publish_job(connection: AsyncConnection, job) -> None:
    """The message that hands `job`'s current attempt to a worker."""
    await publish_jobs(connection, [job])


async def publish_jobs(connection: AsyncConnection, jobs) -> None:
    if not jobs:
        return
    messages = []
    for job in jobs:
        # Each renewal is a trace of its own from here (scheduler → queue → worker → gateway
        # → PSP); inside an RPC, a child of that RPC's span.
        with tracer.start_as_current_span(
            "rebill.schedule",
            attributes={
                "subscription.id": job.subscription_id,
                "tenant": job.merchant_id,
                "rebill.job.id": job.id,
                "rebill.attempt": job.attempt,
            },
        ):
            messages.append(
                event_values(
                    event_type=job_routing_key(job.queue),
                    aggregate_type="rebill_job",
                    aggregate_id=job.id,
                    payload={
                        "attempt": job.attempt,
                        "subscription_id": job.subscription_id,
                        "merchant_id": job.merchant_id,
                    },
                )
            )
    await connection.execute(_OUTBOX_ROWS, {"rows": json.dumps(messages)})
