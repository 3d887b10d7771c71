"""The payments' successes webhook_svc has stored from the gateway's own events
(webhook.events, `payment_intent.succeeded`), found by the PSP's reference: what a PSP's
capture webhook is compared with (webhook_svc.domain.echoes)."""

from __future__ import annotations

import json

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


class RecordedSuccesses:
    """Lookups of webhooks handled at the same time go in one autocommit statement."""

    def __init__(self, direct: DirectSql):
        self._direct = direct
        self._reads = Coalescer(self._read_many)

    async def of(self, psp_reference: str) -> tuple[RecordedSuccess, str | None] | None:
        """The success recorded under the PSP's reference and its event's traceparent; None
        if webhook_svc has none (yet)."""
        return await self._reads.submit(psp_reference)

    async def _read_many(
        self, references: list[str]
    ) -> list[tuple[RecordedSuccess, str | None] | None]:
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
