"""Every SQL statement of reconciliation: the ledger's records by PSP reference, a run's
working set of PSP references (in the database, not in memory), the ledger's settled records
that the PSP did not list, mismatches recorded once, runs, and their audit rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway_svc.domain.models import AuditEntry, new_id
from gateway_svc.domain.reconciliation import (
    CHARGE,
    DISPUTE,
    REFUND,
    Finding,
    LedgerRecord,
    MismatchState,
)
from gateway_svc.repository.rows import audit_values
from gateway_svc.tables import (
    disputes,
    payment_audit,
    payment_intents,
    reconciliation_mismatches,
    reconciliation_psp_records,
    reconciliation_runs,
    refunds,
)
from paymesh.platform.problems import FailedPrecondition, NotFound

# The payment_audit account of records that belong to no merchant (a run, a PSP's charge
# the ledger does not know): merchant ids are `acct_…`, so it is nobody's.
OPS_ACCOUNT = "ops"

_MISMATCH = reconciliation_mismatches.c


@dataclass(frozen=True)
class Ledger:
    """What the ledger holds for one page of PSP records."""

    charges: dict[str, LedgerRecord]  # by the PSP's charge (or payment intent) reference
    refunds: dict[str, LedgerRecord]  # by the PSP's refund reference
    refunds_in_flight: set[str]  # charge references with a refund of paymesh's unanswered
    disputes: dict[str, LedgerRecord]  # by the PSP's dispute reference


class ReconciliationStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    # --- the ledger ----------------------------------------------------------------------

    async def ledger(
        self,
        psp: str,
        charges: Sequence[str],
        refund_refs: Sequence[str],
        dispute_refs: Sequence[str] = (),
    ) -> Ledger:
        intents = payment_intents.c
        async with self._engine.connect() as connection:
            intent_rows = (
                await connection.execute(
                    select(payment_intents).where(
                        intents.psp == psp, intents.psp_reference.in_(list(charges))
                    )
                )
            ).all()
            refund_rows = (
                await connection.execute(
                    select(refunds, intents.psp)
                    .join(payment_intents, intents.id == refunds.c.payment_intent)
                    .where(refunds.c.psp_reference.in_(list(refund_refs)), intents.psp == psp)
                )
            ).all()
            waiting = (
                await connection.execute(
                    select(intents.psp_reference)
                    .join(refunds, intents.id == refunds.c.payment_intent)
                    .where(
                        intents.psp == psp,
                        intents.psp_reference.in_(list(charges)),
                        refunds.c.status == "pending",
                        refunds.c.psp_reference.is_(None),
                    )
                )
            ).all()
            dispute_rows = (
                (
                    await connection.execute(
                        select(disputes).where(
                            disputes.c.psp == psp, disputes.c.psp_reference.in_(list(dispute_refs))
                        )
                    )
                ).all()
                if dispute_refs
                else []
            )
        return Ledger(
            {row.psp_reference: _intent_record(row) for row in intent_rows},
            {row.psp_reference: _refund_record(row) for row in refund_rows},
            {row.psp_reference for row in waiting},
            {row.psp_reference: _dispute_record(row) for row in dispute_rows},
        )

    async def stage(self, run_id: str, references: Sequence[str]) -> None:
        """Notes the PSP references a run has read."""
        if references:
            async with self._engine.begin() as connection:
                await connection.execute(
                    pg_insert(reconciliation_psp_records).on_conflict_do_nothing(),
                    [{"run_id": run_id, "reference": r} for r in references],
                )

    async def unlisted(
        self,
        run_id: str,
        psp: str,
        object_type: str,
        start: datetime,
        end: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[tuple[datetime, str], LedgerRecord]]:
        """One page of the ledger's settled records of the period (intents captured, refunds
        succeeded, disputes opened) whose reference the run did not read at the PSP, oldest
        first."""
        intents = payment_intents.c
        if object_type == CHARGE:
            table, query = payment_intents, select(payment_intents)
            conditions = [intents.psp == psp, intents.status == "succeeded"]
        elif object_type == DISPUTE:
            table, query = disputes, select(disputes)
            conditions = [disputes.c.psp == psp]
        else:
            table = refunds
            query = select(refunds, intents.psp).join(
                payment_intents, intents.id == refunds.c.payment_intent
            )
            conditions = [intents.psp == psp, refunds.c.status == "succeeded"]
        column = table.c
        staged = reconciliation_psp_records.c
        conditions += [
            column.psp_reference.is_not(None),
            column.created_at >= start,
            column.created_at < end,
            ~exists().where(staged.run_id == run_id, staged.reference == column.psp_reference),
        ]
        if after is not None:
            conditions.append(tuple_(column.created_at, column.id) > tuple_(*after))
        query = query.where(*conditions).order_by(column.created_at, column.id).limit(limit)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        to_record = {CHARGE: _intent_record, DISPUTE: _dispute_record}.get(
            object_type, _refund_record
        )
        return [((row.created_at, row.id), to_record(row)) for row in rows]

    # --- runs and mismatches -------------------------------------------------------------

    async def start_run(self, psp: str, start: datetime, end: datetime, actor: str) -> str:
        run_id = new_id("rcr_")
        async with self._engine.begin() as connection:
            # Working sets of runs that died long ago (a killed process) go too.
            await connection.execute(
                delete(reconciliation_psp_records).where(
                    reconciliation_psp_records.c.run_id.in_(
                        select(reconciliation_runs.c.id).where(
                            reconciliation_runs.c.status == "running",
                            reconciliation_runs.c.started_at
                            < func.now() - literal_column("interval '1 day'"),
                        )
                    )
                )
            )
            await connection.execute(
                insert(reconciliation_runs).values(
                    id=run_id,
                    psp=psp,
                    period_start=start,
                    period_end=end,
                    actor=actor,
                    status="running",
                )
            )
        return run_id

    async def record(self, run_id: str, psp: str, findings: Sequence[Finding]) -> list[Any]:
        """Records the findings no run recorded before; returns the new mismatch rows."""
        if not findings:
            return []
        rows = [
            {
                "id": new_id("rcm_"),
                "psp": psp,
                "run_id": run_id,
                "kind": str(f.kind),
                "object_type": f.object_type,
                "reference": f.reference,
                "payment_intent": f.payment_intent or None,
                "merchant_id": f.merchant_id or None,
                "psp_amount": f.psp_amount,
                "ledger_amount": f.ledger_amount,
                "psp_currency": f.psp_currency[:3],
                "ledger_currency": f.ledger_currency[:3],
                "psp_status": f.psp_status[:32],
                "ledger_status": f.ledger_status[:32],
            }
            for f in findings
        ]
        async with self._engine.begin() as connection:
            return list(
                (
                    await connection.execute(
                        pg_insert(reconciliation_mismatches)
                        .on_conflict_do_nothing(constraint="reconciliation_mismatches_once")
                        .returning(reconciliation_mismatches),
                        rows,
                    )
                ).all()
            )

    async def finish_run(
        self, run_id: str, status: str, checked: int, found: int, audit: AuditEntry
    ) -> datetime:
        """Ends the run, its audit row in the same transaction; drops its working set."""
        async with self._engine.begin() as connection:
            finished = (
                await connection.execute(
                    update(reconciliation_runs)
                    .where(reconciliation_runs.c.id == run_id)
                    .values(
                        status=status,
                        records_checked=checked,
                        new_mismatches=found,
                        finished_at=func.now(),
                    )
                    .returning(reconciliation_runs.c.finished_at)
                )
            ).scalar_one()
            await _audit(connection, audit)
            await connection.execute(
                delete(reconciliation_psp_records).where(
                    reconciliation_psp_records.c.run_id == run_id
                )
            )
        return finished

    async def last_successes(self) -> dict[str, datetime]:
        runs = reconciliation_runs.c
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(runs.psp, func.max(runs.finished_at))
                    .where(runs.status == "succeeded")
                    .group_by(runs.psp)
                )
            ).all()
        return {psp: at for psp, at in rows}

    async def mismatches(
        self,
        state: str,
        kind: str,
        psp: str,
        limit: int,
        starting_after: str,
    ) -> tuple[list[Any], bool]:
        """Newest first, filtered; the page after `starting_after` if given."""
        conditions = []
        if state:
            conditions.append(_MISMATCH.state == state)
        if kind:
            conditions.append(_MISMATCH.kind == kind)
        if psp:
            conditions.append(_MISMATCH.psp == psp)
        async with self._engine.connect() as connection:
            if starting_after:
                cursor = (
                    await connection.execute(
                        select(_MISMATCH.found_at, _MISMATCH.id).where(
                            _MISMATCH.id == starting_after
                        )
                    )
                ).first()
                if cursor is None:
                    raise NotFound(
                        f"no such mismatch: {starting_after!r}", reason="resource_missing"
                    )
                conditions.append(tuple_(_MISMATCH.found_at, _MISMATCH.id) < tuple_(*cursor))
            rows = (
                await connection.execute(
                    select(reconciliation_mismatches)
                    .where(and_(True, *conditions))
                    .order_by(_MISMATCH.found_at.desc(), _MISMATCH.id.desc())
                    .limit(limit + 1)
                )
            ).all()
        return rows[:limit], len(rows) > limit

    async def resolve(
        self, mismatch_id: str, resolution: MismatchState, note: str, who: str, audit_of
    ) -> Any:
        """Closes an open mismatch with its audit row, in one transaction."""
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    update(reconciliation_mismatches)
                    .where(_MISMATCH.id == mismatch_id, _MISMATCH.state == MismatchState.OPEN)
                    .values(state=resolution, note=note, resolved_by=who, resolved_at=func.now())
                    .returning(reconciliation_mismatches)
                )
            ).first()
            if row is None:
                found = (
                    await connection.execute(
                        select(_MISMATCH.state).where(_MISMATCH.id == mismatch_id)
                    )
                ).first()
                if found is None:
                    raise NotFound(f"no such mismatch: {mismatch_id!r}", reason="resource_missing")
                raise FailedPrecondition(
                    f"mismatch {mismatch_id} is {found.state} already", reason="mismatch_closed"
                )
            await _audit(connection, audit_of(row))
        return row


async def _audit(connection: AsyncConnection, entry: AuditEntry) -> None:
    await connection.execute(insert(payment_audit), [audit_values(entry)])


def _intent_record(row) -> LedgerRecord:
    return LedgerRecord(
        CHARGE,
        row.psp_reference,
        row.id,
        row.merchant_id,
        row.amount_received,
        row.currency,
        row.status,
        in_flight=row.pending_operation is not None or row.status == "processing",
    )


def _refund_record(row) -> LedgerRecord:
    return LedgerRecord(
        REFUND,
        row.psp_reference,
        row.payment_intent,
        row.merchant_id,
        row.amount,
        row.currency,
        row.status,
    )


def _dispute_record(row) -> LedgerRecord:
    return LedgerRecord(
        DISPUTE,
        row.psp_reference,
        row.payment_intent,
        row.merchant_id,
        row.amount,
        row.currency,
        row.status,
    )
