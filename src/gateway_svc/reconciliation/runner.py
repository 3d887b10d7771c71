"""Reconciliation's use cases: a run (the PSP's settled records of a period against the
ledger), the mismatches, and their resolution.

A run reads the PSP a page at a time and looks the page's references up in the ledger, so a
day is never held in memory: the references read so far are noted in the database (the run's
working set), and the ledger's settled records of the period that the PSP did not list are
then paged out of it and asked for one by one at the PSP (a record settled just outside the
period is found there; one the PSP has no record of is `missing_at_psp`). A mismatch is
recorded once per PSP, reference and kind, so a later run does not count it again."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from gateway_svc.domain import reconciliation as rules
from gateway_svc.domain.models import AuditEntry
from gateway_svc.domain.reconciliation import (
    CHARGE,
    DISPUTE,
    DISPUTE_REVERSAL,
    REFUND,
    MismatchState,
)
from gateway_svc.metrics import (
    RECONCILIATION_LAST_SUCCESS,
    RECONCILIATION_MISMATCHES,
    RECONCILIATION_RECORDS_CHECKED,
)
from gateway_svc.psp.settlements import Settlements
from gateway_svc.reconciliation.store import OPS_ACCOUNT, ReconciliationStore
from paymesh.platform.problems import InvalidArgument

log = structlog.get_logger(__name__)
DEFAULT_PERIOD = timedelta(days=1)
LEDGER_PAGE = 100
REPORTED_MISMATCHES = 100  # a run's answer lists at most this many of its new mismatches
DISPUTE_MONEY = (DISPUTE, DISPUTE_REVERSAL)


@dataclass(frozen=True)
class Who:
    """Who asks: the authenticated identity (`ops`, `scheduler`, `cli`), the person it names,
    and why."""

    actor: str
    operator: str = ""
    reason: str = ""

    def details(self) -> dict[str, str]:
        return {"identity": self.actor, "operator": self.operator, "reason": self.reason}


@dataclass
class RunReport:
    run_id: str
    psp: str
    start: datetime
    end: datetime
    records_checked: int = 0
    new_mismatches: int = 0
    mismatches: list[Any] = field(default_factory=list)  # the first new mismatch rows


class Reconciler:
    def __init__(
        self, store: ReconciliationStore, settlements: dict[str, Callable[[], Settlements]]
    ):
        self.store = store
        self._settlements = settlements  # per PSP, a client opened for one run

    @property
    def psps(self) -> list[str]:
        return list(self._settlements)

    def period(self, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
        end = end or datetime.now(UTC)
        start = start or end - DEFAULT_PERIOD
        if start >= end:
            raise InvalidArgument.for_field("from", "invalid_period", "from must be before to")
        return start, end

    async def run(
        self, psp: str, start: datetime | None, end: datetime | None, who: Who
    ) -> RunReport:
        if psp not in self._settlements:
            raise InvalidArgument.for_field(
                "psp", "invalid_value", f"psp must be one of {', '.join(self._settlements)}"
            )
        start, end = self.period(start, end)
        report = RunReport(await self.store.start_run(psp, start, end, who.actor), psp, start, end)
        source = self._settlements[psp]()
        try:
            await self._compare_psp_records(source, report)
            for object_type in source.object_types:
                await self._look_for_unlisted(source, report, object_type)
        except Exception as error:
            await self.store.finish_run(
                report.run_id,
                "failed",
                report.records_checked,
                report.new_mismatches,
                _run_audit(report, who, "failed", error=type(error).__name__),
            )
            log.exception("reconciliation_failed", psp=psp, run=report.run_id)
            raise
        finally:
            await source.close()
        finished = await self.store.finish_run(
            report.run_id,
            "succeeded",
            report.records_checked,
            report.new_mismatches,
            _run_audit(report, who, "succeeded"),
        )
        RECONCILIATION_LAST_SUCCESS.labels(psp).set(finished.timestamp())
        RECONCILIATION_RECORDS_CHECKED.labels(psp).inc(0)  # a quiet period shows as 0, not absent
        log.info(
            "reconciliation_run",
            psp=psp,
            run=report.run_id,
            records_checked=report.records_checked,
            new_mismatches=report.new_mismatches,
        )
        return report

    async def _compare_psp_records(self, source: Settlements, report: RunReport) -> None:
        async for page in source.pages(report.start, report.end):
            await self.store.stage(report.run_id, [r.reference for r in page])
            charges = {r.reference for r in page if r.object_type == CHARGE}
            charges |= {r.charge for r in page if r.object_type != CHARGE and r.charge}
            refund_refs = [r.reference for r in page if r.object_type == REFUND]
            dispute_refs = [r.reference for r in page if r.object_type in DISPUTE_MONEY]
            ledger = await self.store.ledger(
                report.psp, sorted(charges), refund_refs, sorted(set(dispute_refs))
            )
            findings = []
            for record in page:
                if record.object_type == CHARGE:
                    findings += rules.compare(record, ledger.charges.get(record.reference))
                elif record.object_type in DISPUTE_MONEY:
                    if record.reference in ledger.disputes:
                        findings += rules.compare(record, ledger.disputes[record.reference])
                    else:
                        payment = ledger.charges.get(record.charge)
                        findings += rules.unrecorded_dispute(record, payment)
                elif record.reference in ledger.refunds:
                    findings += rules.compare(record, ledger.refunds[record.reference])
                else:
                    findings += rules.unrecorded_refund(
                        record,
                        ledger.charges.get(record.charge),
                        record.charge in ledger.refunds_in_flight,
                    )
            await self._record(report, len(page), findings)

    async def _look_for_unlisted(
        self, source: Settlements, report: RunReport, object_type: str
    ) -> None:
        after = None
        while True:
            page = await self.store.unlisted(
                report.run_id,
                report.psp,
                object_type,
                report.start,
                report.end,
                after,
                LEDGER_PAGE,
            )
            if not page:
                return
            findings = []
            for _, ledger in page:
                found = await source.lookup(object_type, ledger.reference)
                if found is None:
                    findings.append(rules.missing_at_psp(ledger))
                else:
                    findings += rules.compare(found, ledger)
            await self._record(report, len(page), findings)
            after = page[-1][0]

    async def _record(self, report: RunReport, checked: int, findings: list) -> None:
        report.records_checked += checked
        RECONCILIATION_RECORDS_CHECKED.labels(report.psp).inc(checked)
        new = await self.store.record(report.run_id, report.psp, findings)
        for row in new:
            RECONCILIATION_MISMATCHES.labels(report.psp, row.kind, "reconciliation").inc()
            log.warning(
                "reconciliation_mismatch",
                psp=report.psp,
                kind=row.kind,
                reference=row.reference,
                correlation_id=row.payment_intent or "",
                mismatch=row.id,
            )
        report.new_mismatches += len(new)
        room = REPORTED_MISMATCHES - len(report.mismatches)
        report.mismatches += new[: max(room, 0)]

    async def refresh_last_success(self) -> None:
        """The gauge from the database: runs made in other processes count too."""
        for psp, finished in (await self.store.last_successes()).items():
            RECONCILIATION_LAST_SUCCESS.labels(psp).set(finished.timestamp())

    async def due(self, psp: str, interval_seconds: float) -> bool:
        finished = (await self.store.last_successes()).get(psp)
        return finished is None or time.time() - finished.timestamp() >= interval_seconds

    async def resolve(
        self, mismatch_id: str, resolution: MismatchState, note: str, who: Who
    ) -> Any:
        if resolution not in (MismatchState.RESOLVED, MismatchState.IGNORED):
            raise InvalidArgument.for_field(
                "resolution", "invalid_value", "resolution must be resolved or ignored"
            )
        if not note.strip():
            raise InvalidArgument.for_field("note", "missing", "say why in a note")
        name = who.operator or who.actor

        def audit_of(row) -> AuditEntry:
            return AuditEntry(
                row.merchant_id or OPS_ACCOUNT,
                who.actor,
                "reconcile",
                row.id,
                str(resolution),
                {
                    **who.details(),
                    "reason": note.strip(),
                    "psp": row.psp,
                    "kind": row.kind,
                    "reference": row.reference,
                    "payment_intent": row.payment_intent,
                },
            )

        return await self.store.resolve(mismatch_id, resolution, note.strip(), name, audit_of)


def _run_audit(report: RunReport, who: Who, result: str, **extra: str) -> AuditEntry:
    return AuditEntry(
        OPS_ACCOUNT,
        who.actor,
        "reconcile",
        report.run_id,
        result,
        {
            **who.details(),
            "psp": report.psp,
            "from": report.start.isoformat(),
            "to": report.end.isoformat(),
            "records_checked": report.records_checked,
            "new_mismatches": report.new_mismatches,
            **extra,
        },
    )
