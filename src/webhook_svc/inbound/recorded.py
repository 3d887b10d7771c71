"""The payments' successes webhook_svc has stored from the gateway's own events
(webhook.events, `payment_intent.succeeded`), found by the PSP's reference: what a PSP's
capture webhook is compared with (webhook_svc.domain.echoes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

from sqlalchemy import text

from paymesh.platform.coalesce import Coalescer
from paymesh.platform.direct_sql import DirectSql
from webhook_svc.domain.echoes import SUCCEEDED, RecordedSuccess

# The newest success event of each reference (an intent succeeds once; a second would be a
# redelivery under another id), with its trace, through the partial index of successes.
_SUCCESSES = text(
    f"""
    SELECT x.reference, e.object, e.traceparent
    FROM jsonb_to_recordset(CAST(:references AS jsonb)) AS x(reference text)
    CROSS JOIN LATERAL (
      SELECT object, traceparent FROM webhook.events
      WHERE type = '{SUCCEEDED}' AND psp_reference = x.reference
      ORDER BY sequence DESC LIMIT 1
    ) e
    """  # noqa: S608 - a constant, never input
)


Found = tuple[RecordedSuccess, str | None]  # the success and its event's traceparent


class RecordedSuccesses:
    """Lookups of webhooks handled at the same time go in one autocommit statement.

    A PSP announces a capture as it makes it, so its webhook usually arrives before the
    gateway's event of the same success has come through the broker. A lookup that finds
    nothing may wait a moment for it: this process's event intake says which successes it
    has just stored (`arrived`), with the events themselves, so no second read is needed.
    With several replicas the event may land on another one;
    the wait then runs out and the gateway decides, as it would have."""

    def __init__(self, direct: DirectSql, wait_seconds: float = 0.25):
        self._direct = direct
        self._reads = Coalescer(self._read_many)
        self._wait_seconds = wait_seconds
        self._waiting: dict[str, list[asyncio.Future[Found]]] = {}

    async def of(self, psp_reference: str, wait: bool = False) -> Found | None:
        """The success recorded under the PSP's reference and its event's traceparent; None
        if webhook_svc has none (after waiting for it a moment, if `wait`)."""
        if not wait:
            return await self._reads.submit(psp_reference)
        # Waiting before the first read: an arrival between the read and the wait is not lost.
        arrival = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(psp_reference, []).append(arrival)
        try:
            found = await self._reads.submit(psp_reference)
            if found is not None:
                return found
            try:
                return await asyncio.wait_for(arrival, self._wait_seconds)
            except TimeoutError:
                return None
        finally:
            waiters = self._waiting.get(psp_reference, [])
            if arrival in waiters:
                waiters.remove(arrival)
            if not waiters:
                self._waiting.pop(psp_reference, None)

    def arrived(self, successes: Iterable[tuple[str, dict, str]]) -> None:
        """The intake stored these `payment_intent.succeeded` events (the PSP's reference,
        the object as the API shows it, the traceparent): the lookups waiting for them have
        their answer."""
        for reference, shown, traceparent in successes:
            found = (RecordedSuccess.of_event(reference, shown), traceparent or None)
            for arrival in self._waiting.pop(reference, []):
                if not arrival.done():
                    arrival.set_result(found)

    async def _read_many(self, references: list[str]) -> list[Found | None]:
        unique = sorted(set(references))
        rows = await self._direct.all(
            _SUCCESSES,
            {"references": json.dumps([{"reference": r} for r in unique])},
            prepare=False,  # planned for webhook.events as it is now, as the inbox's settle
        )
        found = {
            row["reference"]: (
                RecordedSuccess.of_event(row["reference"], row["object"]),
                row["traceparent"],
            )
            for row in rows
        }
        return [found.get(reference) for reference in references]
