"""Disputes as plain Python: what a PSP's report of a dispute does to paymesh's record of it
(gateway_svc.domain.disputes), how its money is reconciled, how the PSPs' dispute events are
read, and the sandbox's disputes and their money movements."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from dev.sandbox_psp import Sandbox
from gateway_svc.domain import disputes as rules
from gateway_svc.domain.models import Dispute, PaymentIntent
from gateway_svc.domain.reconciliation import (
    CHARGE,
    DISPUTE,
    DISPUTE_REVERSAL,
    Kind,
    LedgerRecord,
    PspRecord,
    compare,
    unrecorded_dispute,
)
from gateway_svc.psp.settlements import SettlementsUnavailable, _sandbox_record
from gateway_svc.servicer import dispute_message
from paymesh.platform.wire import api_json
from webhook_svc.inbound import psp_events

CAPTURED = PaymentIntent(
    "pi_1", "acct_1", False, 1000, "usd", "succeeded", "automatic", amount_received=1000
)


def report(status: str = "", amount: int = 1000, currency: str = "usd") -> rules.DisputeReport:
    return rules.DisputeReport("du_1", amount, currency, "fraudulent", status)


def recorded(status: str) -> Dispute:
    return Dispute(
        "dp_1", "acct_1", False, "pi_1", 1000, "usd", "fraudulent", status, "sandbox", "du_1"
    )


def outcome(move: rules.DisputeMove) -> tuple[str, str]:
    return str(move.decision.outcome), move.decision.reason


# --- what a report does --------------------------------------------------------------------


def test_a_new_dispute_of_a_captured_payment_opens_and_tells_the_merchant():
    move = rules.decide(CAPTURED, None, report())

    assert outcome(move) == ("applied", "")
    assert (move.status, move.opens, move.closes) == ("needs_response", True, False)
    assert rules.event_types(move) == ["charge.dispute.created", "payment_intent.disputed"]
    assert rules.audit_action(move) == "dispute_opened"


@pytest.mark.parametrize(
    ("status", "action"), [("won", "dispute_closed"), ("lost", "dispute_closed")]
)
def test_a_dispute_first_heard_of_closed_opens_and_closes_at_once(status, action):
    move = rules.decide(CAPTURED, None, report(status))

    assert (outcome(move), move.status, move.opens) == (("applied", ""), status, True)
    assert rules.event_types(move) == [
        "charge.dispute.created",
        "payment_intent.disputed",
        "charge.dispute.closed",
    ]
    assert rules.audit_action(move) == "dispute_opened"


@pytest.mark.parametrize(
    ("before", "reported", "expected", "events"),
    [
        ("needs_response", "under_review", ("applied", ""), ["charge.dispute.updated"]),
        ("needs_response", "won", ("applied", ""), ["charge.dispute.closed"]),
        ("under_review", "lost", ("applied", ""), ["charge.dispute.closed"]),
        # The same news again, or older news arriving late: nothing moves backwards.
        ("needs_response", "", ("already_applied", ""), []),
        ("needs_response", "needs_response", ("already_applied", ""), []),
        ("under_review", "needs_response", ("already_applied", ""), []),
        ("won", "needs_response", ("already_applied", ""), []),
        ("lost", "under_review", ("already_applied", ""), []),
        ("lost", "lost", ("already_applied", ""), []),
        # A closed dispute never changes its outcome.
        ("won", "lost", ("ignored", "dispute_outcome_differs"), []),
    ],
)
def test_a_recorded_dispute_only_moves_on(before, reported, expected, events):
    move = rules.decide(CAPTURED, recorded(before), report(reported))

    assert outcome(move) == expected
    if move.decision.outcome == "applied":
        assert move.status == (reported or "needs_response") and not move.opens
        assert rules.event_types(move) == events
        assert rules.audit_action(move) == ("dispute_closed" if move.closes else "dispute_updated")


def test_an_outcome_that_differs_from_the_recorded_one_is_a_mismatch_for_a_human():
    move = rules.decide(CAPTURED, recorded("won"), report("lost"))

    assert move.decision.mismatch


@pytest.mark.parametrize(
    ("intent", "dispute", "expected", "mismatch"),
    [
        (CAPTURED, report(amount=1001), ("ignored", "amount_mismatch"), True),
        (CAPTURED, report(amount=0), ("ignored", "amount_mismatch"), True),
        (CAPTURED, report(currency="eur"), ("ignored", "currency_mismatch"), True),
        (CAPTURED, report(currency="USD"), ("applied", ""), False),
        (CAPTURED, report(amount=400), ("applied", ""), False),
        (
            CAPTURED.replace(status="requires_capture", amount_received=0),
            report(),
            ("retry_later", "not_captured_yet"),
            False,
        ),
        (
            CAPTURED.replace(status="processing", amount_received=0),
            report(),
            ("retry_later", "not_captured_yet"),
            False,
        ),
        (
            CAPTURED.replace(status="canceled", amount_received=0),
            report(),
            ("ignored", "unexpected_state"),
            True,
        ),
        # Stripe's inquiries withdraw nothing and are not disputes yet.
        (CAPTURED, report("warning_needs_response"), ("ignored", "inquiry"), False),
        (CAPTURED, report("charge_refunded"), ("ignored", "unsupported_dispute_status"), False),
    ],
)
def test_a_new_dispute_is_opened_only_on_money_that_was_captured(
    intent, dispute, expected, mismatch
):
    move = rules.decide(intent, None, dispute)

    assert outcome(move) == expected
    assert move.decision.mismatch is mismatch


def test_a_dispute_is_shown_as_the_api_prints_it_to_merchants_and_in_its_events():
    created = datetime(2026, 12, 14, 9, 30, 5, 250000, tzinfo=UTC)
    dispute = dataclasses.replace(recorded("lost"), created_at=created)

    assert api_json(dispute_message(dispute)) == {
        "id": "dp_1",
        "payment_intent": "pi_1",
        "amount": "1000",
        "currency": "usd",
        "reason": "fraudulent",
        "status": "lost",
        "psp": "sandbox",
        "psp_reference": "du_1",
        "created": "2026-12-14T09:30:05.250Z",
        "livemode": False,
    }


# --- reconciliation of a dispute's money --------------------------------------------------

WITHDRAWN = PspRecord(DISPUTE, "du_1", 1000, "usd", charge="ch_1")
REINSTATED = PspRecord(DISPUTE_REVERSAL, "du_1", 1000, "usd", charge="ch_1")
PAYMENT = LedgerRecord(CHARGE, "ch_1", "pi_1", "acct_1", 1000, "usd", "succeeded")


def ledger_dispute(status: str, amount: int = 1000) -> LedgerRecord:
    return LedgerRecord(DISPUTE, "du_1", "pi_1", "acct_1", amount, "usd", status)


def kinds(findings) -> list[Kind]:
    return [f.kind for f in findings]


@pytest.mark.parametrize("status", ["needs_response", "under_review", "won", "lost"])
def test_a_withdrawal_agrees_with_the_ledgers_dispute_in_any_state(status):
    assert compare(WITHDRAWN, ledger_dispute(status)) == []


def test_a_withdrawal_of_another_amount_is_an_amount_mismatch():
    assert kinds(compare(WITHDRAWN, ledger_dispute("lost", 900))) == [Kind.AMOUNT_MISMATCH]


def test_money_given_back_agrees_only_with_a_won_dispute():
    assert compare(REINSTATED, ledger_dispute("won")) == []
    for status in ("needs_response", "under_review", "lost"):
        [finding] = compare(REINSTATED, ledger_dispute(status))
        assert (finding.kind, finding.object_type, finding.ledger_status) == (
            Kind.STATUS_MISMATCH,
            DISPUTE_REVERSAL,
            status,
        )


@pytest.mark.parametrize(
    ("at_psp", "in_ledger", "agree"),
    [
        ("lost", "lost", True),
        ("won", "won", True),
        ("under_review", "needs_response", True),
        ("won", "lost", False),
        ("lost", "needs_response", False),
        ("needs_response", "won", False),
    ],
)
def test_a_dispute_looked_up_at_the_psp_agrees_unless_closed_otherwise(at_psp, in_ledger, agree):
    looked_up = PspRecord(DISPUTE, "du_1", 1000, "usd", at_psp, charge="ch_1")

    assert kinds(compare(looked_up, ledger_dispute(in_ledger))) == (
        [] if agree else [Kind.STATUS_MISMATCH]
    )


def test_a_dispute_the_ledger_never_heard_of_is_missing_in_it_naming_the_payment():
    [finding] = unrecorded_dispute(WITHDRAWN, PAYMENT)
    [unknown] = unrecorded_dispute(WITHDRAWN, None)

    assert (finding.kind, finding.reference, finding.payment_intent, finding.psp_amount) == (
        Kind.MISSING_IN_LEDGER,
        "du_1",
        "pi_1",
        1000,
    )
    assert (unknown.kind, unknown.payment_intent) == (Kind.MISSING_IN_LEDGER, "")


def test_the_sandboxs_movements_are_read_with_their_signs_and_an_unknown_one_fails_the_run():
    def row(kind: str, amount: int, source: str = "du_1") -> dict:
        return {
            "type": kind,
            "source": source,
            "charge": "ch_1",
            "amount": amount,
            "currency": "usd",
        }

    assert _sandbox_record(row("dispute", -700)) == PspRecord(
        DISPUTE, "du_1", 700, "usd", charge="ch_1"
    )
    assert _sandbox_record(row("dispute_reversal", 700)) == PspRecord(
        DISPUTE_REVERSAL, "du_1", 700, "usd", charge="ch_1"
    )
    assert _sandbox_record(row("charge", 1000, "ch_1")) == PspRecord(CHARGE, "ch_1", 1000, "usd")
    with pytest.raises(SettlementsUnavailable, match="fee"):
        _sandbox_record(row("fee", -30, "fee_1"))


# --- the PSPs' dispute events, read ---------------------------------------------------------


@pytest.mark.parametrize(
    ("psp", "event_type", "payment_key"),
    [
        ("sandbox", "charge.dispute.created", "charge"),
        ("sandbox", "charge.dispute.updated", "charge"),
        ("sandbox", "charge.dispute.closed", "charge"),
        ("stripe", "charge.dispute.created", "payment_intent"),
        ("stripe", "charge.dispute.updated", "payment_intent"),
        ("stripe", "charge.dispute.closed", "payment_intent"),
    ],
)
def test_every_event_of_a_dispute_is_read_with_its_status_and_currency(
    psp, event_type, payment_key
):
    dispute = {
        "id": "du_1",
        payment_key: "ref_1",
        "amount": 700,
        "currency": "usd",
        "reason": "fraudulent",
        "status": "lost",
    }
    event = {"id": "evt_1", "type": event_type, "created": 1, "data": {"object": dispute}}

    [fact] = psp_events.parse(psp, event).facts

    assert (fact.psp_reference, fact.event_type) == ("ref_1", event_type)
    disputed = fact.disputed
    assert (disputed.dispute_reference, disputed.amount, disputed.currency) == ("du_1", 700, "usd")
    assert (disputed.reason, disputed.status) == ("fraudulent", "lost")


# --- the sandbox's disputes -------------------------------------------------------------------


def captured_charge(sandbox: Sandbox, amount: int = 1000) -> str:
    _, card = sandbox.handle("/v1/cards", {"number": "4242424242424242"}, None)
    status, charge = sandbox.handle(
        "/v1/charges", {"card": card["id"], "amount": amount, "currency": "usd"}, None
    )
    assert status == 200, charge
    return charge["id"]


def movements(sandbox: Sandbox) -> list[tuple[str, str, int]]:
    _, page = sandbox.transactions_page({})
    return [(t["type"], t["source"], t["amount"]) for t in page["data"]]


@pytest.mark.parametrize(("outcome_", "money_back"), [("won", True), ("lost", False)])
def test_a_sandbox_dispute_withdraws_its_amount_and_a_won_one_gives_it_back(outcome_, money_back):
    sandbox = Sandbox()
    charge = captured_charge(sandbox)

    status, dispute = sandbox.dashboard(charge, "dispute", {"amount": 600})
    assert status == 200 and dispute["status"] == "needs_response"
    assert dispute["id"].startswith("du_") and dispute["charge"] == charge
    status, closed = sandbox.close_dispute(dispute["id"], {"status": outcome_})

    assert status == 200 and closed["status"] == outcome_
    assert sandbox.lookup("disputes", dispute["id"]) == (200, closed)
    expected = [("charge", charge, 1000), ("dispute", dispute["id"], -600)]
    if money_back:
        expected.append(("dispute_reversal", dispute["id"], 600))
    assert movements(sandbox) == expected


def test_the_sandbox_refuses_what_a_bank_cannot_do_and_moves_no_money():
    sandbox = Sandbox()
    charge = captured_charge(sandbox)
    _, dispute = sandbox.dashboard(charge, "dispute", {})
    before = movements(sandbox)

    refused = {
        "second dispute": sandbox.dashboard(charge, "dispute", {}),
        "amount beyond": sandbox.dashboard(captured_charge(sandbox), "dispute", {"amount": 1001}),
        "amount as text": sandbox.dashboard(captured_charge(sandbox), "dispute", {"amount": "5"}),
        "unknown charge": sandbox.dashboard("ch_nope", "dispute", {}),
        "bad status": sandbox.close_dispute(dispute["id"], {"status": "draw"}),
        "unknown dispute": sandbox.close_dispute("du_nope", {"status": "won"}),
    }
    sandbox.close_dispute(dispute["id"], {"status": "lost"})
    refused["closed twice"] = sandbox.close_dispute(dispute["id"], {"status": "won"})

    assert {name: status for name, (status, _) in refused.items()} == {
        "second dispute": 400,
        "amount beyond": 400,
        "amount as text": 400,
        "unknown charge": 400,
        "bad status": 400,
        "unknown dispute": 404,
        "closed twice": 400,
    }
    assert [m for m in movements(sandbox) if m[0].startswith("dispute")] == [
        m for m in before if m[0].startswith("dispute")
    ]


def test_a_sandbox_dispute_is_announced_opened_and_closed():
    sandbox = Sandbox()
    sandbox.knobs["webhook_hold"] = True  # no URL: the events stay held, to be looked at
    charge = captured_charge(sandbox)
    _, dispute = sandbox.dashboard(charge, "dispute", {"reason": "product_not_received"})
    sandbox.close_dispute(dispute["id"], {"status": "won"})

    announced = [
        (e["type"], e["data"]["object"]["status"])
        for e in sandbox.webhooks.held
        if e["type"].startswith("charge.dispute")
    ]

    assert announced == [
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.closed", "won"),
    ]
    assert sandbox.webhooks.held[-1]["data"]["object"]["reason"] == "product_not_received"
