"""The back office's plain rules: what a search's free text means, which inputs are refused
(and the field each names), the PSP attempts a payment's audit rows tell of, money movements
as an ERP takes them, daily figures, and the search's SQL (which filters, which order)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import grpc
import pytest
from sqlalchemy.dialects import postgresql

from gateway_svc.backoffice import BackOfficeServicer, masked_card
from gateway_svc.domain import backoffice as rules
from gateway_svc.repository.backoffice import disputes_query, movements_query, search_query
from paymesh.gateway.v1 import backoffice_pb2 as pb2
from paymesh.platform.problems import InvalidArgument
from paymesh.vault.v1 import vault_pb2

T0 = datetime(2026, 12, 1, tzinfo=UTC)
PI = "pi_" + "a" * 24
ACCT = "acct_" + "b" * 24


def field_of(error: InvalidArgument) -> str:
    return error.violations[0].field


@pytest.mark.parametrize(
    ("q", "kind", "value"),
    [
        (PI, "intent", PI),
        (f"  {ACCT} ", "merchant", ACCT),
        ("1999", "amount", 1999),
        ("ch_3Nabc", "reference", "ch_3Nabc"),
        ("pi_short!", "reference", "pi_short!"),
    ],
)
def test_the_free_text_names_an_intent_a_merchant_an_amount_or_a_psp_reference(q, kind, value):
    assert rules.parse_query(q) == rules.Term(kind, value)


def test_empty_free_text_filters_nothing():
    assert rules.parse_query("   ") is None
    assert rules.payment_search().term is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"limit": 101}, "limit"),
        ({"limit": -1}, "limit"),
        ({"psp": "paypal"}, "psp"),
        ({"amount_min": -5}, "amount_min"),
        ({"amount_min": 500, "amount_max": 100}, "amount_max"),
        ({"created_from": T0, "created_to": T0}, "created_to"),
        ({"starting_after": "re_nope"}, "starting_after"),
        ({"q": "x" * 1001}, "q"),
    ],
)
def test_a_bad_search_names_its_field(fields, named):
    with pytest.raises(InvalidArgument) as refused:
        rules.payment_search(**fields)
    assert field_of(refused.value) == named


def test_a_search_pages_25_by_default_and_up_to_100():
    assert rules.payment_search().limit == 25
    assert rules.payment_search(limit=100).limit == 100


def test_open_disputes_are_those_awaiting_a_response_or_under_review():
    assert rules.dispute_statuses("open") == ("needs_response", "under_review")
    assert rules.dispute_statuses("won") == ("won",)
    assert rules.dispute_statuses("") == ()
    with pytest.raises(InvalidArgument) as refused:
        rules.dispute_statuses("pending")
    assert field_of(refused.value) == "status"


@pytest.mark.parametrize(
    ("start", "end", "named"),
    [(None, T0, "from"), (T0, None, "to"), (T0, T0 - timedelta(days=1), "to")],
)
def test_a_period_needs_from_before_to(start, end, named):
    with pytest.raises(InvalidArgument) as refused:
        rules.period(start, end)
    assert field_of(refused.value) == named


@pytest.mark.parametrize("missing", ["operator", "reason", "idempotency_key"])
def test_an_operator_refund_names_who_why_and_its_key(missing):
    values = {"operator": "ann@example.com", "reason": "customer called", "idempotency_key": "k"}
    values[missing] = " "
    with pytest.raises(InvalidArgument) as refused:
        rules.operator_request(values["operator"], values["reason"], values["idempotency_key"])
    assert field_of(refused.value) == missing


def row(minutes: int, action: str, result: str, object_id: str = PI, **details) -> rules.AuditRow:
    return rules.AuditRow(
        T0 + timedelta(minutes=minutes), "api", action, object_id, result, details
    )


def test_psp_attempts_are_the_answered_calls_with_their_traces_oldest_first():
    audit = [
        row(0, "create", "ok"),
        row(1, "confirm_started", "processing"),
        row(
            2,
            "confirm",
            "declined",
            psp="sandbox",
            decline_code="insufficient_funds",
            trace_id="t1",
        ),
        row(3, "confirm_started", "processing"),
        row(4, "confirm", "succeeded", psp="sandbox", trace_id="t2"),
        row(5, "refund_created", "pending", "re_1"),
        row(6, "refund", "succeeded", "re_1", trace_id="t3"),
    ]

    attempts = rules.psp_attempts(audit, "sandbox", "ch_9", f"{PI}:abc:sandbox", {"re_1": "rf_7"})

    assert [(a.operation, a.outcome, a.code, a.trace_id) for a in attempts] == [
        ("authorize", "declined", "insufficient_funds", "t1"),
        ("authorize", "succeeded", "", "t2"),
        ("refund", "succeeded", "", "t3"),
    ]
    assert (attempts[1].key, attempts[1].psp_reference) == (f"{PI}:abc:sandbox", "ch_9")
    assert (attempts[0].key, attempts[0].psp_reference) == ("", "")
    assert (attempts[2].key, attempts[2].psp_reference) == ("re_1", "rf_7")


def test_only_an_operators_rows_name_an_operator():
    assert rules.operator_of("operator", {"operator": "ann@example.com"}) == "ann@example.com"
    assert rules.operator_of("api", {"operator": "forged"}) == ""


@pytest.mark.parametrize(
    ("kind", "signed"),
    [("capture", 1000), ("refund", -1000), ("dispute", -1000), ("dispute_reversal", 1000)],
)
def test_money_in_is_positive_and_money_out_negative_in_uppercase_currency(kind, signed):
    moved = rules.movement(kind, "x_1", PI, ACCT, 1000, "usd", "sandbox", "ref", T0)

    assert (moved.amount, moved.currency, moved.fee) == (signed, "USD", None)


def test_daily_figures_add_up_per_day_and_psp_with_volume_per_currency():
    figures = rules.daily_by_psp(
        [
            ("2026-12-01", "sandbox", "eur", 2, 1, 500),
            ("2026-12-01", "sandbox", "usd", 3, 2, 2000),
            ("2026-12-01", "stripe", "usd", 1, 0, 0),
        ]
    )

    assert figures == [
        rules.DailyPsp("2026-12-01", "sandbox", 5, 3, {"eur": 500, "usd": 2000}),
        rules.DailyPsp("2026-12-01", "stripe", 1, 0, {}),
    ]


def sql(statement) -> str:
    compiled = statement.compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    return " ".join(str(compiled).split()).replace("gateway.", "")


def test_the_search_filters_as_asked_newest_first_after_the_cursor():
    search = rules.payment_search(q="1999", status="succeeded", psp="stripe", limit=10)

    text = sql(search_query(search, (T0, PI)))

    assert "payment_intents.amount = 1999" in text
    assert "payment_intents.status = 'succeeded'" in text
    assert "payment_intents.psp = 'stripe'" in text
    assert f"(payment_intents.created_at, payment_intents.id) < ('{T0}', '{PI}')" in text
    assert text.endswith(
        "ORDER BY payment_intents.created_at DESC, payment_intents.id DESC LIMIT 11"
    )


def test_a_psp_reference_finds_the_payment_or_the_payment_of_a_refund():
    text = sql(search_query(rules.payment_search(q="ch_3Nabc"), None))

    assert "payment_intents.psp_reference = 'ch_3Nabc'" in text
    assert "refunds.psp_reference = 'ch_3Nabc'" in text


def test_disputes_come_by_evidence_due_date_those_without_one_last():
    text = sql(disputes_query(("needs_response", "under_review"), "", "", 50, None))

    assert "disputes.status IN ('needs_response', 'under_review')" in text
    assert "ORDER BY disputes.evidence_due_by ASC NULLS LAST, disputes.id" in text


def test_the_export_reads_the_four_kinds_of_movement_of_the_period_oldest_first():
    text = sql(movements_query(T0, T0 + timedelta(days=1), ACCT))

    for kind in ("'capture'", "'refund'", "'dispute'", "'dispute_reversal'"):
        assert kind in text
    assert "refunds.status = 'succeeded'" in text
    assert "disputes.status = 'won'" in text
    assert text.count(f"'{ACCT}'") == 4


def test_a_page_looks_up_each_card_once_and_skips_payments_without_one():
    assert rules.cards_to_look_up(["pm_a", None, "pm_b", "", "pm_a"]) == ["pm_a", "pm_b"]
    assert rules.cards_to_look_up([None, ""]) == []


def test_a_summary_carries_the_vaults_masked_card_or_stays_empty():
    card = vault_pb2.CardSummary(
        payment_method="pm_a", brand="visa", last4="4242", fingerprint="fp1", exp_month=12
    )
    shown, unknown = pb2.PaymentSummary(), pb2.PaymentSummary()

    masked_card(shown, card)
    masked_card(unknown, None)

    assert (shown.card_brand, shown.card_last4, shown.card_fingerprint) == ("visa", "4242", "fp1")
    assert (unknown.card_brand, unknown.card_last4, unknown.card_fingerprint) == ("", "", "")


class FailingVault:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def card_summaries(self, payment_methods: list[str]) -> list[vault_pb2.CardSummary]:
        self.asked.append(payment_methods)
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "vault down"
        )


def test_a_vault_that_fails_leaves_the_cards_unknown_and_the_page_standing():
    vault = FailingVault()
    servicer = BackOfficeServicer(None, None, None, None, None, vault)  # type: ignore[arg-type]
    rows = [SimpleNamespace(payment_method="pm_a"), SimpleNamespace(payment_method=None)]

    cards = asyncio.run(servicer._cards_of(rows))

    assert cards == {}
    assert vault.asked == [["pm_a"]]  # one call for the page
