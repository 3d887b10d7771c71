"""webhook.psp_inbox: every PSP event once, by the PSP's event id, with how often it was
delivered and what became of it (received, deferred, applied, already_applied, ignored)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import text

from paymesh.platform.coalesce import Coalescer
from paymesh.platform.direct_sql import DirectSql

FINAL = ("applied", "already_applied", "ignored")

_FINAL_SQL = ", ".join(f"'{status}'" for status in FINAL)
# Every delivery of a PSP event: recorded once, counted each time; its status before it.
# Webhooks that arrive together are recorded in one statement (coalesced), each event once
# with its count of deliveries (ON CONFLICT may not touch a row twice in one statement).
_RECEIVE = text(
    """
    INSERT INTO webhook.psp_inbox AS i
      (psp, event_id, event_type, psp_created_at, status, payload, deliveries)
    SELECT psp, event_id, event_type, created, 'received', payload, copies
    FROM jsonb_to_recordset(CAST(:deliveries AS jsonb)) AS x(
      psp text, event_id text, event_type text, created timestamptz, payload jsonb,
      copies integer)
    ON CONFLICT (psp, event_id) DO UPDATE SET
      deliveries = i.deliveries + EXCLUDED.deliveries, last_received_at = now()
    RETURNING i.psp, i.event_id, i.status, i.xmax = 0 AS inserted
    """
)
# What became of events, unless they were settled before. The keys again as `= ANY(ARRAY(…))`:
# an index condition whatever the planner believes of the batch (100 rows) and the table.
# Not prepared: a plan cached while the inbox was small read all of it once it had grown.
_SETTLE = text(
    f"""
    WITH x AS (
      SELECT * FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS x(
        psp text, event_id text, status text, reason text, payment_intent text)
    )
    UPDATE webhook.psp_inbox i SET status = x.status, reason = x.reason,
      payment_intent = x.payment_intent, processed_at = now()
    FROM x
    WHERE i.psp = ANY(ARRAY(SELECT psp FROM x)) AND i.event_id = ANY(ARRAY(SELECT event_id FROM x))
      AND i.psp = x.psp AND i.event_id = x.event_id AND i.status NOT IN ({_FINAL_SQL})
    RETURNING i.psp, i.event_id
    """
)

# A delivery recorded and settled at once (the PSP's echo of what the gateway recorded:
# webhook_svc.domain.echoes), in one statement: a new event is written settled; one received
# before is counted, and settled unless it was before. `settled`: this statement settled it,
# i.e. its processed_at is this transaction's start (another's would be its own).
_RECEIVE_SETTLED = text(
    f"""
    INSERT INTO webhook.psp_inbox AS i
      (psp, event_id, event_type, psp_created_at, status, reason, payment_intent, payload,
       deliveries, processed_at)
    SELECT psp, event_id, event_type, created, status, reason, payment_intent, payload, copies,
           now()
    FROM jsonb_to_recordset(CAST(:deliveries AS jsonb)) AS x(
      psp text, event_id text, event_type text, created timestamptz, status text, reason text,
      payment_intent text, payload jsonb, copies integer)
    ON CONFLICT (psp, event_id) DO UPDATE SET
      deliveries = i.deliveries + EXCLUDED.deliveries, last_received_at = now(),
      status = CASE WHEN i.status IN ({_FINAL_SQL}) THEN i.status ELSE EXCLUDED.status END,
      reason = CASE WHEN i.status IN ({_FINAL_SQL}) THEN i.reason ELSE EXCLUDED.reason END,
      payment_intent = CASE WHEN i.status IN ({_FINAL_SQL}) THEN i.payment_intent
                            ELSE EXCLUDED.payment_intent END,
      processed_at = CASE WHEN i.status IN ({_FINAL_SQL}) THEN i.processed_at ELSE now() END
    RETURNING i.psp, i.event_id, i.processed_at = now() AS settled
    """  # noqa: S608 - fixed fragments, never input
)

_LAST_TRACE = text(
    """
    SELECT traceparent FROM webhook.events
    WHERE object_id = :object_id AND traceparent IS NOT NULL
    ORDER BY sequence DESC LIMIT 1
    """
)


class Inbox:
    """webhook.psp_inbox: every PSP event once, with how often it came and what became of it.
    Autocommit statements straight on psycopg, each carrying the webhooks handled at the same
    time (every charge's capture comes back through here)."""

    def __init__(self, direct: DirectSql):
        self._direct = direct
        self._receipts = Coalescer(self._receive_many)
        self._outcomes = Coalescer(self._settle_many)
        self._settled_receipts = Coalescer(self._receive_settled_many)

    async def receive(self, psp: str, event: dict) -> str:
        """Records a delivery; the event's status before it (`new` for its first)."""
        # Read here, not in the batch: a bad value (read_event refuses those) would fail its own
        # webhook, not the others.
        created = datetime.fromtimestamp(event["created"], UTC).isoformat()
        return await self._receipts.submit((psp, event, created))

    async def settle(
        self, psp: str, event_id: str, status: str, reason: str, payment_intent: str
    ) -> bool:
        """Records what became of the event; True if this settled it (it was not before)."""
        return await self._outcomes.submit(
            {
                "psp": psp,
                "event_id": event_id,
                "status": status,
                "reason": reason or None,
                "payment_intent": payment_intent or None,
            }
        )

    async def receive_settled(
        self, psp: str, event: dict, status: str, reason: str, payment_intent: str
    ) -> bool:
        """Records a delivery and what became of its event in one statement (the event's
        fate is known before it is recorded); True if this settled it, False if it was
        settled before (a duplicate)."""
        created = datetime.fromtimestamp(event["created"], UTC).isoformat()
        return await self._settled_receipts.submit(
            {
                "psp": psp,
                "event_id": event["id"],
                "event_type": event["type"],
                "created": created,
                "status": status,
                "reason": reason or None,
                "payment_intent": payment_intent or None,
                "payload": event,
            }
        )

    async def trace_of(self, object_id: str) -> str | None:
        """The traceparent of the newest domain event about an object (a payment's last
        operation), to link a PSP's webhook about it to that payment's trace."""
        row = await self._direct.one(_LAST_TRACE, {"object_id": object_id})
        return row["traceparent"] if row else None

    async def _receive_many(self, deliveries: list[tuple[str, dict, str]]) -> list[str]:
        rows: dict[tuple[str, str], dict] = {}
        for psp, event, created in deliveries:
            row = rows.setdefault(
                (psp, event["id"]),
                {
                    "psp": psp,
                    "event_id": event["id"],
                    "event_type": event["type"],
                    "created": created,
                    "payload": event,
                    "copies": 0,
                },
            )
            row["copies"] += 1
        recorded = await self._direct.all(_RECEIVE, {"deliveries": json.dumps(list(rows.values()))})
        before = {
            (row["psp"], row["event_id"]): "new" if row["inserted"] else row["status"]
            for row in recorded
        }
        # A second copy in the same batch came while the first was still being handled.
        answers, seen = [], set()
        for psp, event, _ in deliveries:
            key = (psp, event["id"])
            answers.append("received" if key in seen else before[key])
            seen.add(key)
        return answers

    async def _settle_many(self, outcomes: list[dict]) -> list[bool]:
        first: dict[tuple[str, str], dict] = {}
        for outcome in outcomes:
            first.setdefault((outcome["psp"], outcome["event_id"]), outcome)
        settled = {
            (row["psp"], row["event_id"])
            for row in await self._direct.all(
                _SETTLE, {"outcomes": json.dumps(list(first.values()))}, prepare=False
            )
        }
        return [
            first[(o["psp"], o["event_id"])] is o and (o["psp"], o["event_id"]) in settled
            for o in outcomes
        ]

    async def _receive_settled_many(self, deliveries: list[dict]) -> list[bool]:
        rows: dict[tuple[str, str], dict] = {}
        for delivery in deliveries:
            key = (delivery["psp"], delivery["event_id"])
            row = rows.setdefault(key, {**delivery, "copies": 0})
            row["copies"] += 1
        settled = {
            (row["psp"], row["event_id"])
            for row in await self._direct.all(
                _RECEIVE_SETTLED, {"deliveries": json.dumps(list(rows.values()))}
            )
            if row["settled"]
        }
        # A second copy in the same batch found it settled by the first.
        answers, seen = [], set()
        for delivery in deliveries:
            key = (delivery["psp"], delivery["event_id"])
            answers.append(key in settled and key not in seen)
            seen.add(key)
        return answers
