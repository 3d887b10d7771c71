"""StreamEvents: every received event to internal consumers, resumable without gap or
duplicate.

The stream's order is (the transaction that wrote the event, its row): rows are read only
from transactions older than every transaction still running (the snapshot's xmin), so a
transaction that commits later can only add rows after the stream's position, never before
it. The price: a transaction left open anywhere in the database holds the stream back until
it ends."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Callers
from paymesh.platform.db import autocommit
from paymesh.platform.errors import InvalidArgument
from paymesh.webhook.v1 import event_stream_pb2, event_stream_pb2_grpc
from webhook_svc.domain.rules import EVENT_TYPES
from webhook_svc.outbound.servicer import event_message

# Every service of the mesh may listen; merchants may not (they have webhooks).
LISTENERS = {"gateway", "vault", "rebill", "webhook", "ops"}
_TOKEN = re.compile(r"(\d{1,19})\.(\d{1,19})")

_PAGE = text(
    """
    SELECT id, type, merchant_id, livemode, object, sequence, created_at, txid, position
    FROM webhook.events
    WHERE (txid, position) > (:txid, :position)
      AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
      AND (cardinality(CAST(:types AS text[])) = 0 OR type = ANY(CAST(:types AS text[])))
    ORDER BY txid, position
    LIMIT :limit
    """
)


def resume_token(row) -> str:
    return f"{row.txid}.{row.position}"


def parse_resume_token(token: str) -> tuple[int, int]:
    if not token:
        return 0, 0
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise InvalidArgument.for_field(
            "resume_after", "invalid_resume_token", "a resume_token this stream sent"
        )
    return int(match[1]), int(match[2])


class EventStreamServicer(event_stream_pb2_grpc.EventStreamServiceServicer):
    def __init__(
        self, engine: AsyncEngine, callers: Callers, poll_seconds: float = 0.2, page: int = 500
    ):
        self._reads = autocommit(engine)
        self._callers = callers
        self._poll = poll_seconds
        self._page = page

    async def StreamEvents(self, request, context):
        self._callers.service(context, LISTENERS)
        unknown = [t for t in request.types if t not in EVENT_TYPES]
        if unknown:
            raise InvalidArgument.for_field("types", "invalid_event_type", "event types only")
        txid, position = parse_resume_token(request.resume_after)
        types = list(request.types)
        while True:
            async with self._reads.connect() as connection:
                rows = (
                    await connection.execute(
                        _PAGE,
                        {"txid": txid, "position": position, "types": types, "limit": self._page},
                    )
                ).all()
            for row in rows:
                yield event_stream_pb2.StreamedEvent(
                    event=event_message(row),
                    merchant_id=row.merchant_id,
                    resume_token=resume_token(row),
                )
                txid, position = row.txid, row.position
            if len(rows) < self._page:
                await asyncio.sleep(self._poll)
