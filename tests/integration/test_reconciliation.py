"""Reconciliation against the real PSP stand-ins: each kind of mismatch is made the way it
really happens (at the sandbox, behind paymesh's back), found by a run, and counted once
however often the period is reconciled. Each test reconciles only the seconds it acted in."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psycopg
import pytest

from tests.support import cards
from tests.support.http import call
from tests.support.mesh import create_merchant, paymesh
from tests.support.ops import grpcurl
from tests.support.payments import pay, post, refund_when, route
from tests.support.psp import sandbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
SERVICE = "paymesh.gateway.v1.ReconciliationService"


def recon(mesh, method: str, body: dict) -> dict:
    done = grpcurl(mesh, "gateway", f"{SERVICE}/{method}", body)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


def moment(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class Window:
    """The seconds a test acts in: it starts on a fresh second (the sandbox dates its records
    in whole seconds), so that no earlier test's records fall inside."""

    def __enter__(self) -> Window:
        time.sleep(1.05 - time.time() % 1)
        self.start = datetime.now(UTC)
        return self

    def __exit__(self, *_exc) -> None:
        self.end = datetime.now(UTC)

    def run(self, mesh, psp: str = "sandbox", **extra) -> dict:
        body = {"psp": psp, "from": moment(self.start), "to": moment(self.end), **extra}
        return recon(mesh, "RunReconciliation", body)


def found(report: dict) -> set[tuple[str, str]]:
    return {
        (m["reference"], m["kind"].removeprefix("MISMATCH_KIND_").lower())
        for m in report.get("mismatches", [])
    }


@pytest.fixture
def stripe_merchant(infra):

    payer = create_merchant(infra, "reconciled-at-stripe")
    route(infra, payer, "stripe")
    return payer


def metric(mesh, name: str, **labels: str) -> float:
    text = call(f"http://127.0.0.1:{mesh.ports.http['gateway']}/metrics").body
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.split()[-1])
    return total


def psp_reference(infra, intent_id: str) -> str:
    with psycopg.connect(infra.database_url) as db:
        row = db.execute(
            "SELECT psp_reference FROM gateway.payment_intents WHERE id = %s", (intent_id,)
        ).fetchone()
    return row[0]


def audit_rows(infra, object_id: str) -> list[tuple]:
    with psycopg.connect(infra.database_url) as db:
        return db.execute(
            "SELECT actor, action, result, details FROM gateway.payment_audit"
            " WHERE object_id = %s ORDER BY id",
            (object_id,),
        ).fetchall()


def paid(mesh, merchant, infra, amount: int = 1000) -> tuple[str, str]:
    intent = pay(mesh, merchant, amount=amount).body
    assert intent["status"] == "succeeded", intent
    return intent["id"], psp_reference(infra, intent["id"])


def found_once(mesh, window: Window, kind: str, expected: set) -> dict:
    """Runs the window twice; the first run finds exactly `expected`, the second nothing new,
    and the metric counts each mismatch once."""
    before = metric(mesh, "reconciliation_mismatches_total", kind=kind, reason="reconciliation")
    first = window.run(mesh)
    second = window.run(mesh)
    after = metric(mesh, "reconciliation_mismatches_total", kind=kind, reason="reconciliation")
    assert found(first) == expected
    assert int(second.get("new_mismatches", 0)) == 0
    assert after - before == len(expected)
    return first


@pytest.mark.parametrize("psp", ["sandbox", "stripe"])
def test_a_clean_period_reports_zero_mismatches_and_moves_the_last_success(
    mesh, infra, merchant, stripe_merchant, psp
):
    payer = stripe_merchant if psp == "stripe" else merchant
    with Window() as window:
        refunded = pay(mesh, payer).body
        pay(mesh, payer, amount=2500)
        refund = post(mesh, payer, "/v1/refunds", {"payment_intent": refunded["id"], "amount": 300})
        refund_when(mesh, payer, refund.body["id"], "succeeded", timeout=20)
    last_before = metric(mesh, "reconciliation_last_success_timestamp_seconds", psp=psp)
    checked_before = metric(mesh, "reconciliation_records_checked_total", psp=psp)

    report = window.run(mesh, psp, operator="alice", reason="month end")

    assert int(report.get("new_mismatches", 0)) == 0 and "mismatches" not in report
    assert int(report["records_checked"]) == 3  # two captures and a refund, each read once
    assert metric(mesh, "reconciliation_last_success_timestamp_seconds", psp=psp) > last_before
    assert metric(mesh, "reconciliation_records_checked_total", psp=psp) == checked_before + 3
    [(actor, action, result, details)] = audit_rows(infra, report["run_id"])
    assert (actor, action, result) == ("ops", "reconcile", "succeeded")
    assert details["psp"] == psp and details["records_checked"] == 3
    assert (details["operator"], details["reason"]) == ("alice", "month end")


def test_a_charge_made_at_the_psp_behind_our_back_is_missing_in_the_ledger_once(mesh):
    with Window() as window:
        card = sandbox(mesh, "/v1/cards", {"number": "4242424242424242", "exp_month": 12})
        charge = sandbox(
            mesh, "/v1/charges", {"card": card["id"], "amount": 1234, "currency": "usd"}
        )

    found_once(mesh, window, "missing_in_ledger", {(charge["id"], "missing_in_ledger")})
    # The command line finds nothing new either: the mismatch is counted once, wherever from.
    cli = json.loads(
        paymesh(
            "recon",
            "run",
            "--psp",
            "sandbox",
            "--from",
            window.start.isoformat(),
            "--to",
            window.end.isoformat(),
            env=mesh.env,
        )
    )
    assert cli["new_mismatches"] == 0 and cli["records_checked"] == 1


def test_a_refund_made_on_the_dashboard_while_its_webhook_is_held_is_a_status_mismatch_once(
    mesh, infra, merchant
):
    with Window() as window:
        intent_id, charge = paid(mesh, merchant, infra)
        sandbox(mesh, "/_knobs", {"webhook_hold": True})
        try:
            refund = sandbox(mesh, f"/_dashboard/charges/{charge}/refund", {"amount": 400})
        finally:
            sandbox(mesh, "/_knobs", {"webhook_hold": False})

    report = found_once(mesh, window, "status_mismatch", {(refund["id"], "status_mismatch")})
    [mismatch] = report["mismatches"]
    assert mismatch["payment_intent"] == intent_id
    assert (mismatch["psp_amount"], mismatch.get("ledger_amount", "0")) == ("400", "0")

    # The held webhook arrives: the ledger catches up, and no run finds anything new.
    sandbox(mesh, "/_webhooks/flush", {})

    def refunded() -> int:
        url = mesh.url(f"/v1/payment_intents/{intent_id}")
        return int(call(url, headers=merchant.auth()).body.get("amount_refunded", 0))

    wait_until(lambda: refunded() == 400, timeout=20)
    assert int(window.run(mesh).get("new_mismatches", 0)) == 0

    resolved = recon(
        mesh,
        "ResolveMismatch",
        {
            "id": mismatch["id"],
            "resolution": "RESOLUTION_RESOLVED",
            "note": "webhook was held; applied",
            "operator": "bob",
        },
    )["mismatch"]
    again = grpcurl(
        mesh,
        "gateway",
        f"{SERVICE}/ResolveMismatch",
        {"id": mismatch["id"], "resolution": "RESOLUTION_IGNORED", "note": "twice"},
    )
    listed = recon(
        mesh,
        "ListMismatches",
        {"state": "MISMATCH_STATE_RESOLVED", "kind": "MISMATCH_KIND_STATUS_MISMATCH"},
    )

    assert (resolved["state"], resolved["resolved_by"]) == ("MISMATCH_STATE_RESOLVED", "bob")
    assert again.returncode != 0 and "FailedPrecondition" in again.stderr
    assert mismatch["id"] in [m["id"] for m in listed["mismatches"]]
    [(actor, action, result, details)] = audit_rows(infra, mismatch["id"])
    assert (actor, action, result) == ("ops", "reconcile", "resolved")
    assert details["reason"] == "webhook was held; applied" and details["operator"] == "bob"


@pytest.mark.parametrize(
    ("change", "kind"),
    [({"amount": 999}, "amount_mismatch"), ({"currency": "eur"}, "currency_mismatch")],
)
def test_an_amount_or_currency_altered_at_the_psp_is_found_once(
    mesh, infra, merchant, change, kind
):
    with Window() as window:
        intent_id, charge = paid(mesh, merchant, infra)
        sandbox(mesh, f"/_dashboard/charges/{charge}/alter", change)

    [mismatch] = found_once(mesh, window, kind, {(charge, kind)})["mismatches"]
    assert mismatch["payment_intent"] == intent_id


def test_an_intent_whose_psp_record_is_lost_is_missing_at_the_psp_once(mesh, infra, merchant):
    with Window() as window:
        intent_id, charge = paid(mesh, merchant, infra)
        sandbox(mesh, f"/_dashboard/charges/{charge}/forget", {})

    [mismatch] = found_once(mesh, window, "missing_at_psp", {(charge, "missing_at_psp")})[
        "mismatches"
    ]
    assert (mismatch["payment_intent"], mismatch["ledger_amount"]) == (intent_id, "1000")


def test_one_gateway_process_reconciles_each_psp_on_its_schedule(mesh, infra):
    def scheduled() -> set[str]:
        with psycopg.connect(infra.database_url) as db:
            rows = db.execute(
                "SELECT details->>'psp' FROM gateway.payment_audit"
                " WHERE action = 'reconcile' AND actor = 'scheduler' AND result = 'succeeded'"
            ).fetchall()
        return {psp for (psp,) in rows}

    assert wait_until(lambda: scheduled() >= {"sandbox", "stripe"}, timeout=30)
    assert metric(mesh, "reconciliation_last_success_timestamp_seconds", psp="stripe") > 0


def test_reconciliation_is_for_operators_only(mesh, merchant):
    refused = grpcurl(
        mesh,
        "gateway",
        f"{SERVICE}/ListMismatches",
        {},
        as_operator=False,
        api_key=merchant.secret_key,
    )

    assert refused.returncode != 0 and "PermissionDenied" in refused.stderr


def test_a_declines_audit_row_names_the_psp_the_decline_code_and_the_trace(mesh, infra, merchant):
    declined = pay(mesh, merchant, number=cards.VISA_DECLINE).body

    rows = audit_rows(infra, declined["id"])
    [details] = [d for (_, act, result, d) in rows if (act, result) == ("confirm", "declined")]

    assert (details["psp"], details["decline_code"]) == ("sandbox", "generic_decline")
    assert len(details["trace_id"]) == 32 and int(details["trace_id"], 16)
    assert all("trace_id" in d and d.get("psp") == "sandbox" for (*_, d) in rows[1:])


def ledger_dispute_status(infra, intent_id: str) -> str | None:
    with psycopg.connect(infra.database_url) as db:
        row = db.execute(
            "SELECT status FROM gateway.disputes WHERE payment_intent = %s", (intent_id,)
        ).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize(("outcome", "movements"), [("lost", 2), ("won", 3)])
def test_a_disputed_charge_reconciles_with_no_mismatch_and_its_movements_are_checked(
    mesh, infra, merchant, outcome, movements
):
    with Window() as window:
        intent_id, charge = paid(mesh, merchant, infra)
        dispute = sandbox(mesh, f"/_dashboard/charges/{charge}/dispute", {"amount": 700})
        sandbox(mesh, f"/_dashboard/disputes/{dispute['id']}/close", {"status": outcome})
        wait_until(lambda: ledger_dispute_status(infra, intent_id) == outcome, timeout=20)

    report = window.run(mesh)

    assert int(report.get("new_mismatches", 0)) == 0 and "mismatches" not in report
    # The capture, the dispute's withdrawal and (won) the money given back: each read once.
    assert int(report["records_checked"]) == movements


def test_a_dispute_the_gateway_never_heard_of_is_missing_in_the_ledger_once(mesh, infra, merchant):
    with Window() as window:
        intent_id, charge = paid(mesh, merchant, infra)
        sandbox(mesh, "/_knobs", {"webhook_hold": True})
        try:
            dispute = sandbox(mesh, f"/_dashboard/charges/{charge}/dispute", {})
        finally:
            sandbox(mesh, "/_knobs", {"webhook_hold": False})

    report = found_once(mesh, window, "missing_in_ledger", {(dispute["id"], "missing_in_ledger")})
    [mismatch] = report["mismatches"]
    assert (mismatch["object_type"], mismatch["payment_intent"]) == ("dispute", intent_id)
    assert (mismatch["psp_amount"], mismatch.get("ledger_amount", "0")) == ("1000", "0")

    # The held webhook arrives: the ledger catches up, and no run finds anything new.
    sandbox(mesh, "/_webhooks/flush", {})
    wait_until(lambda: ledger_dispute_status(infra, intent_id) == "needs_response", timeout=20)
    assert int(window.run(mesh).get("new_mismatches", 0)) == 0
