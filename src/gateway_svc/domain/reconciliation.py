"""Reconciliation as plain decisions: one PSP record (a settled charge or refund, the money a
dispute withdrew or a won one gave back) against what the ledger holds under the same PSP
reference. A record whose ledger side is still being decided (a PSP operation of paymesh's in
flight) is no mismatch yet: the next run sees it again."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_AT_PSP = "missing_at_psp"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    STATUS_MISMATCH = "status_mismatch"


class MismatchState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    IGNORED = "ignored"


CHARGE, REFUND = "charge", "refund"
# A dispute's money: withdrawn when it opened, given back (the reversal) when it was won.
DISPUTE, DISPUTE_REVERSAL = "dispute", "dispute_reversal"
SETTLED = "settled"  # what a PSP record's status reads when it is money that moved
_CLOSED_DISPUTE = frozenset({"won", "lost"})


@dataclass(frozen=True, slots=True)
class PspRecord:
    """Money the PSP settled. `reference`: the PSP's id that the ledger keeps (its charge or
    payment intent id, its refund or dispute id); `charge`: for a refund or a dispute, the
    reference of its payment. A dispute looked up by its id has the PSP's status of it
    (`needs_response` … `lost`) instead of SETTLED."""

    object_type: str  # charge | refund | dispute | dispute_reversal
    reference: str
    amount: int  # positive, minor units
    currency: str
    status: str = SETTLED
    charge: str = ""


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """The ledger's side of a reference: an intent (for a charge), a refund or a dispute."""

    object_type: str
    reference: str
    payment_intent: str
    merchant_id: str
    amount: int  # an intent's amount received; a refund's or a dispute's amount
    currency: str
    status: str
    in_flight: bool = False  # a PSP operation of paymesh's on it is not settled yet


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    object_type: str
    reference: str
    payment_intent: str = ""
    merchant_id: str = ""
    psp_amount: int = 0
    ledger_amount: int = 0
    psp_currency: str = ""
    ledger_currency: str = ""
    psp_status: str = ""
    ledger_status: str = ""


_SETTLED_IN_LEDGER = {CHARGE: "succeeded", REFUND: "succeeded"}


def compare(record: PspRecord, ledger: LedgerRecord | None) -> list[Finding]:
    """The PSP's record against the ledger's record of the same reference."""
    if ledger is None:
        return [_finding(Kind.MISSING_IN_LEDGER, record, None)]
    if ledger.in_flight or ledger.status == "pending":
        return []
    findings = []
    if record.currency.lower() != ledger.currency.lower():
        findings.append(_finding(Kind.CURRENCY_MISMATCH, record, ledger))
    if not _states_agree(record, ledger):
        findings.append(_finding(Kind.STATUS_MISMATCH, record, ledger))
    elif record.amount != ledger.amount:
        findings.append(_finding(Kind.AMOUNT_MISMATCH, record, ledger))
    return findings


def _states_agree(record: PspRecord, ledger: LedgerRecord) -> bool:
    if record.object_type == DISPUTE_REVERSAL:
        return ledger.status == "won"  # the money came back: the dispute was won
    if ledger.object_type == DISPUTE:
        # Its withdrawal stands whatever became of the dispute since; the PSP's dispute as
        # looked up agrees unless one side has closed it otherwise than the other.
        return (
            record.status in (SETTLED, ledger.status)
            or not {record.status, ledger.status} & _CLOSED_DISPUTE
        )
    return record.status == SETTLED and ledger.status == _SETTLED_IN_LEDGER[ledger.object_type]


def unrecorded_dispute(record: PspRecord, payment: LedgerRecord | None) -> list[Finding]:
    """Money of a dispute the ledger has no record of (paymesh never heard of the dispute):
    missing in the ledger, naming the payment when the ledger knows it."""
    finding = _finding(Kind.MISSING_IN_LEDGER, record, None)
    if payment is None:
        return [finding]
    return [
        dataclasses.replace(
            finding, payment_intent=payment.payment_intent, merchant_id=payment.merchant_id
        )
    ]


def unrecorded_refund(
    record: PspRecord, payment: LedgerRecord | None, refund_in_flight: bool
) -> list[Finding]:
    """A refund the PSP settled that no refund of the ledger carries: if the ledger knows its
    payment, the payment's state contradicts the PSP's (it shows no such refund), unless a
    refund of paymesh's on that payment is still waiting for its answer; else the ledger
    misses the money altogether."""
    if payment is None:
        return [_finding(Kind.MISSING_IN_LEDGER, record, None)]
    if refund_in_flight or payment.in_flight:
        return []
    finding = _finding(Kind.STATUS_MISMATCH, record, payment)
    return [
        dataclasses.replace(
            finding, object_type=REFUND, ledger_amount=0, ledger_status="not_refunded"
        )
    ]


def missing_at_psp(ledger: LedgerRecord) -> Finding:
    return Finding(
        Kind.MISSING_AT_PSP,
        ledger.object_type,
        ledger.reference,
        payment_intent=ledger.payment_intent,
        merchant_id=ledger.merchant_id,
        ledger_amount=ledger.amount,
        ledger_currency=ledger.currency,
        ledger_status=ledger.status,
    )


def _finding(kind: Kind, record: PspRecord, ledger: LedgerRecord | None) -> Finding:
    return Finding(
        kind,
        record.object_type,
        record.reference,
        payment_intent=ledger.payment_intent if ledger else "",
        merchant_id=ledger.merchant_id if ledger else "",
        psp_amount=record.amount,
        ledger_amount=ledger.amount if ledger else 0,
        psp_currency=record.currency,
        ledger_currency=ledger.currency if ledger else "",
        psp_status=record.status,
        ledger_status=ledger.status if ledger else "",
    )
