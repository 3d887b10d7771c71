"""The back office's pages over the in-memory mesh: what each shows, what each action asks of
the mesh (with the operator's email) and audits, an "unavailable" panel for an RPC that fails,
the CSV export's layout, and no card number in any page."""

from __future__ import annotations

import csv
import dataclasses
import io
import re

import pytest

from backoffice.pages.finance import CSV_COLUMNS
from tests.support.backoffice import console
from tests.support.pan import digit_runs, luhn_ok

KEY_FIELD = re.compile(r'name="idempotency_key" value="([^"]+)"')


def csrf(app, path):
    return app.csrf_from(path)


def test_payments_search_lists_matches_and_answers_htmx_with_the_table_alone():
    app = console()
    app.sign_in("finance")

    page = app.client.get("/payments", params={"q": "acct_globex"})
    partial = app.client.get("/payments", params={"psp": "sandbox"}, headers={"HX-Request": "1"})

    assert page.status_code == 200
    assert 'data-testid="payments-table"' in page.text
    assert "pi_test0002" in page.text and "pi_test0001" not in page.text
    assert "<html" not in partial.text and "pi_test0001" in partial.text
    assert "pi_test0002" not in partial.text


def test_a_payment_shows_its_card_masked_brand_last4_and_fingerprint():
    app = console()
    app.sign_in("finance")
    payment = app.mesh.payments[0]

    page = app.client.get(f"/payments/{payment.id}")
    results = app.client.get("/payments", params={"q": payment.id})

    for html in (page.text, results.text):
        assert "visa •••• 4242" in html
        assert payment.card_fingerprint and payment.card_fingerprint in html


def test_a_payment_without_a_card_shows_none():
    app = console()
    app.sign_in("finance")
    payment = app.mesh.payments[0]
    app.mesh.payments[0] = dataclasses.replace(
        payment, card_brand="", card_last4="", card_fingerprint=""
    )

    page = app.client.get(f"/payments/{payment.id}")

    assert page.status_code == 200
    assert "••••" not in page.text


def test_payments_search_names_a_wrong_field_and_asks_nothing():
    app = console()
    app.sign_in("finance")

    answer = app.client.get("/payments", params={"amount_min": "ten"})

    assert answer.status_code == 400
    assert "amount_min" in answer.text
    assert not any(call == "SearchPayments" for call, _ in app.mesh.calls)


def test_an_rpc_that_fails_shows_an_unavailable_panel_not_a_traceback():
    app = console()
    app.sign_in("admin")
    app.mesh.unavailable |= {
        "SearchPayments",
        "GetPaymentDetail",
        "ListDeliveries",
        "SearchSubscriptions",
        "GetRecoveryStats",
        "ListMismatches",
        "SearchDisputes",
        "ListDeadLetters",
        "ListDeadDeliveries",
        "ListMerchants",
        "SystemStatus",
        "GetPaymentStats",
        "GetSubscriptionDetail",
    }

    for path in [
        "/payments",
        "/payments/pi_test0001",
        "/subscriptions",
        "/subscriptions/sub_1",
        "/reconciliation",
        "/disputes",
        "/dead-letters",
        "/merchants",
        "/system",
        "/payments/charts",
    ]:
        answer = app.client.get(path)
        assert answer.status_code == 200, path
        assert 'data-testid="unavailable"' in answer.text, path
        assert "UNIMPLEMENTED" in answer.text, path


def test_a_payments_page_shows_its_timeline_chain_attempts_and_a_refund_form_for_finance():
    app = console()
    app.sign_in("finance")

    html = app.client.get("/payments/pi_test0001").text

    assert 'data-testid="timeline"' in html and "payment_intent.confirm" in html
    assert 'data-testid="chain-badge" data-verified="true"' in html
    assert "4bf92f3577b34da6a3ce929d0e0e4736" in html  # the attempt's trace id
    assert 'data-testid="refund-form"' in html
    assert 'name="reason"' in html and 'name="amount"' in html
    first, second = (
        KEY_FIELD.search(app.client.get("/payments/pi_test0001").text).group(1) for _ in range(2)
    )
    assert first != second  # a key per rendered form
    assert app.client.get("/payments/pi_nope").status_code == 404


def test_a_refund_names_the_operator_is_audited_and_a_form_posted_twice_refunds_once():
    app = console()
    email = app.sign_in("finance")
    html = app.client.get("/payments/pi_test0001").text
    form = {
        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', html).group(1),
        "idempotency_key": KEY_FIELD.search(html).group(1),
        "amount": "500",
        "reason": "customer asked",
    }

    first = app.client.post("/payments/pi_test0001/refund", data=form)
    again = app.client.post("/payments/pi_test0001/refund", data=form)

    assert first.status_code == 200 and 'data-testid="flash"' in first.text
    assert again.status_code == 200
    assert len(app.mesh.refunds["pi_test0001"]) == 1
    call = next(args for name, args in app.mesh.calls if name == "RefundPayment")
    assert call == ("pi_test0001", 500, "customer asked", email, form["idempotency_key"])
    audit = [r for r in app.store.audit_log if r.action == "refund"]
    assert audit[0].operator == email and audit[0].object_id == "pi_test0001"


def test_a_refund_without_a_reason_is_refused_before_the_mesh_is_asked():
    app = console()
    app.sign_in("finance")
    html = app.client.get("/payments/pi_test0001").text
    form = {
        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', html).group(1),
        "idempotency_key": KEY_FIELD.search(html).group(1),
        "amount": "500",
        "reason": " ",
    }

    answer = app.client.post("/payments/pi_test0001/refund", data=form)

    assert answer.status_code == 400 and "reason: required" in answer.text
    assert app.mesh.refunds == {}


def test_a_refund_the_service_refuses_shows_why_and_is_audited_as_refused():
    app = console()
    app.sign_in("finance")
    html = app.client.get("/payments/pi_test0001").text
    form = {
        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', html).group(1),
        "idempotency_key": KEY_FIELD.search(html).group(1),
        "amount": "999999",
        "reason": "too much",
    }

    answer = app.client.post("/payments/pi_test0001/refund", data=form)

    assert answer.status_code == 409 and "more than remains" in answer.text
    assert app.store.audit_log[-1].result == "refused"


def test_resolving_a_mismatch_sends_the_note_and_operator():
    app = console()
    email = app.sign_in("finance")
    page = app.client.get("/reconciliation")
    assert 'data-testid="mismatches"' in page.text and "rcm_test1" in page.text

    answer = app.client.post(
        "/reconciliation/rcm_test1/resolve",
        data={
            "csrf_token": csrf(app, "/reconciliation"),
            "resolution": "ignored",
            "note": "PSP fee, expected",
        },
    )

    assert answer.status_code == 200
    assert app.mesh.mismatch_list[0].state == "ignored"
    assert app.mesh.mismatch_list[0].resolved_by == email
    assert app.store.audit_log[-1].action == "mismatch.resolve"


@pytest.mark.parametrize(
    ("kind", "item", "verb"),
    [
        ("rebill", "dl_test1", "retry"),
        ("rebill", "dl_test1", "discard"),
        ("webhooks", "whd_test1", "retry"),
        ("webhooks", "whd_test1", "discard"),
    ],
)
def test_dead_letters_and_deliveries_are_retried_or_discarded_under_the_operator(kind, item, verb):
    app = console()
    email = app.sign_in("ops")
    assert item in app.client.get("/dead-letters").text

    answer = app.client.post(
        f"/dead-letters/{kind}/{item}/{verb}", data={"csrf_token": csrf(app, "/dead-letters")}
    )

    assert answer.status_code == 200 and 'data-testid="flash"' in answer.text
    name, args = app.mesh.calls[-3]  # then the page lists both kinds again
    assert verb.capitalize() in name and args == (item, email)
    assert app.store.audit_log[-1].operator == email


def test_a_rolled_key_is_shown_once_and_only_its_last4_is_audited():
    app = console()
    app.sign_in("ops")

    rolled = app.client.post(
        "/merchants/acct_acme/roll",
        data={"csrf_token": csrf(app, "/merchants"), "livemode": "false"},
    )
    secret = re.search(r'data-testid="rolled-secret">([^<]+)<', rolled.text).group(1)

    assert secret.startswith("sk_test_")
    assert secret not in app.client.get("/merchants").text
    assert secret not in str(app.store.audit_log)
    assert app.store.audit_log[-1].details["last4"] == secret[-4:]
    assert "••••a1b2" in rolled.text  # keys: last 4 only


def test_routing_and_revocation_go_through_the_mesh_and_are_audited():
    app = console()
    app.sign_in("ops")

    app.client.post(
        "/merchants/acct_acme/routing",
        data={"csrf_token": csrf(app, "/merchants"), "psp_routing": "stripe, sandbox"},
    )
    app.client.post(
        "/merchants/acct_acme/revoke",
        data={"csrf_token": csrf(app, "/merchants"), "api_key_id": "key_1"},
    )

    assert app.mesh.merchant_list[0].psp_routing == ["stripe", "sandbox"]
    assert ("RevokeApiKey", ("acct_acme", "key_1")) in app.mesh.calls
    assert [r.action for r in app.store.audit_log[-2:]] == ["routing.set", "api_key.revoke"]


def test_the_system_page_shows_health_breakers_queues_outbox_and_the_leader():
    app = console()
    app.sign_in("ops")

    html = app.client.get("/system").text

    for testid in ("health", "breakers", "queues", "outbox", "scheduler-leader"):
        assert f'data-testid="{testid}"' in html
    assert "SERVING" in html and "open" in html and "rebill.monthly" in html


def test_charts_are_inline_svg():
    app = console()
    app.sign_in("finance")

    charts = app.client.get("/payments/charts").text
    recovery = app.client.get("/subscriptions").text

    for testid in ("chart-volume", "chart-success", "chart-declines"):
        assert f'<svg class="chart" data-testid="{testid}"' in charts
    assert "insufficient_funds" in charts
    assert 'data-testid="chart-recovery"' in recovery
    assert "<script" not in charts


def test_the_export_is_one_csv_line_per_movement_in_minor_units_and_iso_currency():
    app = console()
    app.sign_in("finance")

    answer = app.client.get(
        "/exports/money-movements.csv", params={"from": "2026-12-01", "to": "2026-12-01"}
    )

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1] == [
        "capture",
        "pi_test0001",
        "pi_test0001",
        "acct_acme",
        "1001",
        "USD",
        "sandbox",
        "ch_1",
        "59",
        "2026-12-01T12:00:00Z",
    ]
    assert rows[2][4] == "-500" and rows[2][8] == ""  # a refund, no fee known
    start, end = next(args for name, args in app.mesh.calls if name == "ExportMoneyMovements")
    assert (end - start).days == 1  # the whole last day
    assert app.store.audit_log[-1].action == "export"


def test_the_export_names_a_wrong_date():
    app = console()
    app.sign_in("finance")

    answer = app.client.get("/exports/money-movements.csv", params={"from": "yesterday", "to": ""})

    assert answer.status_code == 400 and "from: a date" in answer.text


def test_an_admin_creates_an_operator_whose_password_is_shown_once():
    app = console()
    admin = app.sign_in("admin")

    answer = app.client.post(
        "/operators",
        data={"csrf_token": csrf(app, "/operators"), "email": "new@example.com", "role": "ops"},
    )
    password = re.search(r'data-testid="created-password">([^<]+)<', answer.text).group(1)

    assert "new@example.com" in app.store.operators_by_email
    assert password not in app.client.get("/operators").text
    created = app.store.audit_log[-1]
    assert (created.operator, created.action, created.object_id) == (
        admin,
        "operator.create",
        "new@example.com",
    )
    again = app.client.post(
        "/operators",
        data={"csrf_token": csrf(app, "/operators"), "email": "new@example.com", "role": "ops"},
    )
    assert again.status_code == 409


def test_no_page_shows_a_card_number():
    app = console()
    app.sign_in("admin")
    pages = [
        "/payments",
        "/payments/pi_test0001",
        "/payments/charts",
        "/subscriptions",
        "/subscriptions/sub_test1",
        "/reconciliation",
        "/disputes",
        "/dead-letters",
        "/merchants",
        "/system",
        "/exports",
        "/operators",
        "/exports/money-movements.csv?from=2026-12-01&to=2026-12-02",
    ]

    for path in pages:
        html = app.client.get(path).text
        leaks = [run for run in digit_runs(html) if 12 <= len(run) <= 19 and luhn_ok(run)]
        assert leaks == [], path
