"""Reconciliation's decisions, one PSP record against the ledger's record of its reference."""

from __future__ import annotations

from gateway_svc.domain.reconciliation import (
    CHARGE,
    REFUND,
    Kind,
    LedgerRecord,
    PspRecord,
    compare,
    missing_at_psp,
    unrecorded_refund,
)

CHARGED = PspRecord(CHARGE, "ch_1", 1000, "usd")
INTENT = LedgerRecord(CHARGE, "ch_1", "pi_1", "acct_1", 1000, "usd", "succeeded")
PSP_REFUND = PspRecord(REFUND, "rf_1", 400, "usd", charge="ch_1")


def kinds(findings) -> list[Kind]:
    return [f.kind for f in findings]


def test_a_record_the_ledger_holds_alike_is_no_mismatch():
    assert compare(CHARGED, INTENT) == []


def test_a_charge_the_ledger_does_not_know_is_missing_in_the_ledger():
    assert kinds(compare(CHARGED, None)) == [Kind.MISSING_IN_LEDGER]


def test_a_different_amount_and_a_different_currency_are_each_their_own_kind():
    assert kinds(compare(CHARGED, _with(INTENT, amount=999))) == [Kind.AMOUNT_MISMATCH]
    assert kinds(compare(CHARGED, _with(INTENT, currency="eur"))) == [Kind.CURRENCY_MISMATCH]


def test_a_capture_the_ledger_holds_as_not_succeeded_is_a_status_mismatch():
    assert kinds(compare(CHARGED, _with(INTENT, status="canceled"))) == [Kind.STATUS_MISMATCH]


def test_an_intent_with_a_psp_operation_in_flight_is_not_judged_yet():
    assert compare(CHARGED, _with(INTENT, status="processing", in_flight=True)) == []


def test_a_psp_refund_on_a_known_payment_without_a_ledger_refund_is_a_status_mismatch():
    [finding] = unrecorded_refund(PSP_REFUND, INTENT, refund_in_flight=False)

    assert (finding.kind, finding.reference, finding.payment_intent) == (
        Kind.STATUS_MISMATCH,
        "rf_1",
        "pi_1",
    )
    assert (finding.psp_amount, finding.ledger_amount) == (400, 0)


def test_a_psp_refund_while_one_of_ours_awaits_its_answer_is_not_judged_yet():
    assert unrecorded_refund(PSP_REFUND, INTENT, refund_in_flight=True) == []


def test_a_psp_refund_of_an_unknown_payment_is_missing_in_the_ledger():
    assert kinds(unrecorded_refund(PSP_REFUND, None, refund_in_flight=False)) == [
        Kind.MISSING_IN_LEDGER
    ]


def test_a_ledger_record_the_psp_lost_is_missing_at_the_psp():
    finding = missing_at_psp(INTENT)

    assert (finding.kind, finding.ledger_amount, finding.psp_amount) == (
        Kind.MISSING_AT_PSP,
        1000,
        0,
    )


def _fields(record) -> dict:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _with(record, **changes):
    return record.__class__(**{**_fields(record), **changes})
