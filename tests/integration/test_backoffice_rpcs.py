"""The back office's BackOfficeService on a real mesh, called as the console calls it (the
`backoffice` service identity): payments made through Envoy found by each filter and paged, a
payment's story with its audit chain checked (a tampered row shows), an operator's refund
reaching the sandbox once however often it is posted, disputes by evidence due date, the ERP
export adding up to what the PSP settled, and daily figures counting a decline."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paymesh.gateway.v1 import backoffice_pb2 as pb2
from paymesh.gateway.v1 import backoffice_pb2_grpc as pb2_grpc
from paymesh.platform.service_auth import TokenIssuer, init_keys
from tests.support import cards
from tests.support.http import call
from tests.support.mesh import create_merchant
from tests.support.ops import ADMIN, GRPCURL
from tests.support.pan import digit_runs, luhn_ok
from tests.support.payments import pay, post
from tests.support.psp import refunds_at_psp, sandbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
RECONCILIATION = "paymesh.gateway.v1.ReconciliationService"


@pytest.fixture(scope="module")
def backoffice_token(infra):
    """The console's identity: a key pair of its own beside the services' (as `paymesh keys
    init` makes it)."""
    keys = Path(os.environ["PAYMESH_KEYS_DIR"])
    init_keys(keys, ["backoffice"])
    return lambda identity="backoffice": TokenIssuer(identity, keys).token_for("gateway")


@pytest.fixture
def office(mesh, backoffice_token):
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}")
    stub = pb2_grpc.BackOfficeServiceStub(channel)
    metadata = (("x-paymesh-service-token", backoffice_token()),)

    def rpc(method: str, request, **options):
        return getattr(stub, method)(
            request, metadata=options.get("metadata", metadata), timeout=30
        )

    yield rpc
    channel.close()


def refused(rpc, method: str, request, **options) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        rpc(method, request, **options)
    return error.value


def stamp(at: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(at)
    return value


def psp_reference(infra, intent_id: str) -> str:
    with psycopg.connect(infra.database_url) as db:
        return db.execute(
            "SELECT psp_reference FROM gateway.payment_intents WHERE id = %s", (intent_id,)
        ).fetchone()[0]


def ids(response) -> list[str]:
    return [s.payment_intent.id for s in response.data]


@pytest.fixture(scope="module")
def shop(infra, mesh):
    """A merchant of this module's own with three payments made through Envoy (amounts no
    other test uses), oldest first, and the moments around them."""
    merchant = create_merchant(infra, "backoffice-shop")
    before = datetime.now(UTC)
    unique = int(time.time() * 1000) % 900_000 + 100_000
    paid = [
        pay(mesh, merchant, amount=unique).body,
        pay(mesh, merchant, number=cards.VISA_DECLINE, amount=unique + 1).body,
        pay(mesh, merchant, amount=unique + 2).body,
    ]
    after = datetime.now(UTC)
    assert [p["status"] for p in paid] == ["succeeded", "requires_payment_method", "succeeded"]
    return merchant, paid, before, after


def test_payments_made_through_envoy_are_found_by_each_filter(office, infra, shop):
    merchant, paid, before, after = shop
    first, declined, last = paid
    mine = {p["id"] for p in paid}

    def search(**fields) -> list[str]:
        return ids(office("SearchPayments", pb2.SearchPaymentsRequest(**fields)))

    assert search(q=first["id"]) == [first["id"]]
    assert search(q=merchant.id) == [last["id"], declined["id"], first["id"]]
    assert search(q=str(first["amount"])) == [first["id"]]
    assert search(q=psp_reference(infra, last["id"])) == [last["id"]]
    assert search(merchant_id=merchant.id, status="succeeded") == [last["id"], first["id"]]
    assert search(merchant_id=merchant.id, status="requires_payment_method") == [declined["id"]]
    assert set(search(merchant_id=merchant.id, psp="sandbox")) == mine
    assert search(merchant_id=merchant.id, psp="stripe") == []
    assert search(
        merchant_id=merchant.id, amount_min=int(first["amount"]) + 1, amount_max=int(last["amount"])
    ) == [last["id"], declined["id"]]
    window = {"created_from": stamp(before), "created_to": stamp(after)}
    assert set(search(**window, limit=100)) >= mine
    assert search(merchant_id=merchant.id, created_to=stamp(before)) == []
    found = office("SearchPayments", pb2.SearchPaymentsRequest(q=first["id"])).data[0]
    assert (found.merchant_id, found.merchant_name) == (merchant.id, "backoffice-shop")
    assert (found.card_brand, found.card_last4) == ("visa", "4242")  # masked, from the vault


def test_pages_follow_each_other_newest_first(office, shop):
    merchant, paid, _, _ = shop

    first = office("SearchPayments", pb2.SearchPaymentsRequest(merchant_id=merchant.id, limit=2))
    rest = office(
        "SearchPayments",
        pb2.SearchPaymentsRequest(merchant_id=merchant.id, limit=2, starting_after=ids(first)[-1]),
    )

    assert (ids(first), first.has_more) == ([paid[2]["id"], paid[1]["id"]], True)
    assert (ids(rest), rest.has_more) == ([paid[0]["id"]], False)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb2.SearchPaymentsRequest(limit=101), "limit"),
        (pb2.SearchPaymentsRequest(psp="paypal"), "psp"),
        (pb2.SearchPaymentsRequest(amount_min=-1), "amount_min"),
        (pb2.SearchPaymentsRequest(starting_after="pi_" + "z" * 24), "starting_after"),
    ],
)
def test_a_bad_search_is_invalid_and_names_its_field(office, request_, field):
    error = refused(office, "SearchPayments", request_)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()


def test_a_payments_story_shows_its_audit_rows_attempts_and_a_verified_chain(office, shop):
    _, paid, _, _ = shop
    intent = paid[0]

    detail = office("GetPaymentDetail", pb2.GetPaymentDetailRequest(id=intent["id"]))

    assert detail.summary.payment_intent.id == intent["id"]
    actions = [(e.actor, e.action, e.result) for e in detail.timeline]
    assert actions[0] == ("api", "create", "ok")
    assert ("api", "confirm", "succeeded") in actions
    assert all(e.object_id == intent["id"] for e in detail.timeline)
    assert [e.at.ToDatetime() for e in detail.timeline] == sorted(
        e.at.ToDatetime() for e in detail.timeline
    )
    assert detail.chain.verified and detail.chain.rows >= len(detail.timeline)
    [attempt] = [a for a in detail.attempts if a.operation == "authorize"]
    assert (attempt.psp, attempt.outcome) == ("sandbox", "succeeded")
    assert attempt.psp_reference and attempt.key.startswith(intent["id"])
    confirm = next(e for e in detail.timeline if e.action == "confirm")
    assert attempt.trace_id == json.loads(confirm.details_json).get("trace_id", "")


def test_payments_carry_their_card_masked_from_the_vault_and_never_its_number(office, shop):
    merchant, paid, _, _ = shop
    first, _, last = paid

    found = office("SearchPayments", pb2.SearchPaymentsRequest(merchant_id=merchant.id))
    detail = office("GetPaymentDetail", pb2.GetPaymentDetailRequest(id=first["id"]))

    # The same card (the default Visa) for both paid: one fingerprint at this merchant.
    cards_of = {
        s.payment_intent.id: (s.card_brand, s.card_last4, s.card_fingerprint) for s in found.data
    }
    assert cards_of[first["id"]] == cards_of[last["id"]]
    brand, last4, fingerprint = cards_of[first["id"]]
    assert (brand, last4) == ("visa", "4242") and fingerprint
    summary = detail.summary
    assert (summary.card_brand, summary.card_last4, summary.card_fingerprint) == (
        "visa",
        "4242",
        fingerprint,
    )
    for answer in (found, detail):
        text = str(answer)
        assert cards.VISA not in text
        assert not [run for run in digit_runs(text) if 12 <= len(run) <= 19 and luhn_ok(run)]


def test_a_declined_payments_attempt_names_its_decline(office, shop):
    declined = shop[1][1]

    detail = office("GetPaymentDetail", pb2.GetPaymentDetailRequest(id=declined["id"]))

    [attempt] = [a for a in detail.attempts if a.operation == "authorize"]
    assert (attempt.outcome, attempt.code) == ("declined", "generic_decline")


def test_an_unknown_payment_is_not_found(office):
    error = refused(office, "GetPaymentDetail", pb2.GetPaymentDetailRequest(id="pi_" + "q" * 24))

    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_a_tampered_audit_row_makes_the_merchants_chain_fail_to_verify(office, infra, mesh):
    merchant = create_merchant(infra, "backoffice-tampered")
    intent = pay(mesh, merchant).body
    table = "gateway.payment_audit"
    with psycopg.connect(infra.database_url, autocommit=True) as db:
        row_id, result = db.execute(
            f"SELECT id, result FROM {table} WHERE object_id = %s ORDER BY id LIMIT 1",
            (intent["id"],),
        ).fetchone()
        # Someone with the owner's rights goes around the append-only rule (the chain's own
        # trigger stays on: other writers keep chaining meanwhile), then puts the row back.
        db.execute(f"ALTER TABLE {table} DISABLE TRIGGER payment_audit_append_only")
        try:
            db.execute(f"UPDATE {table} SET result = 'tampered' WHERE id = %s", (row_id,))
            tampered = office("GetPaymentDetail", pb2.GetPaymentDetailRequest(id=intent["id"]))
            db.execute(f"UPDATE {table} SET result = %s WHERE id = %s", (result, row_id))
        finally:
            db.execute(f"ALTER TABLE {table} ENABLE TRIGGER payment_audit_append_only")
    restored = office("GetPaymentDetail", pb2.GetPaymentDetailRequest(id=intent["id"]))

    assert not tampered.chain.verified
    assert str(row_id) in tampered.chain.problem
    assert restored.chain.verified


def test_an_operators_refund_reaches_the_psp_once_however_often_it_is_posted(office, infra, mesh):
    merchant = create_merchant(infra, "backoffice-refunds")
    intent = pay(mesh, merchant, amount=3000).body
    request = pb2.RefundPaymentRequest(
        payment_intent=intent["id"],
        amount=1200,
        reason="customer called: double charge",
        operator="ann@example.com",
        idempotency_key="form-7f3a",
    )

    first = office("RefundPayment", request)
    again = office("RefundPayment", request)

    assert (first.status, first.amount) == ("succeeded", 1200)
    assert again.id == first.id
    assert refunds_at_psp(mesh, psp_reference(infra, intent["id"])) == [-1200]
    detail = office("GetPaymentDetail", pb2.GetPaymentDetailRequest(id=intent["id"]))
    assert [r.id for r in detail.refunds] == [first.id]
    by_operator = [e for e in detail.timeline if e.actor == "operator"]
    assert {(e.action, e.object_id, e.operator) for e in by_operator} == {
        ("refund_created", first.id, "ann@example.com"),
        ("refund", first.id, "ann@example.com"),
    }
    assert all(
        json.loads(e.details_json)["reason"] == "customer called: double charge"
        for e in by_operator
    )
    assert ("refund", "succeeded") in {(a.operation, a.outcome) for a in detail.attempts}
    # The merchant sees it as any refund of its payment.
    seen = call(mesh.url(f"/v1/refunds/{first.id}"), headers=merchant.auth())
    assert (seen.status, seen.body["amount"]) == (200, "1200")  # int64 as JSON text


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"reason": ""}, "reason", grpc.StatusCode.INVALID_ARGUMENT),
        ({"operator": ""}, "operator", grpc.StatusCode.INVALID_ARGUMENT),
        ({"idempotency_key": ""}, "idempotency_key", grpc.StatusCode.INVALID_ARGUMENT),
        ({"amount": 5000}, "amount", grpc.StatusCode.INVALID_ARGUMENT),
        ({"payment_intent": "pi_" + "n" * 24}, "", grpc.StatusCode.NOT_FOUND),
    ],
)
def test_a_bad_refund_names_its_field_and_refunds_nothing(office, infra, mesh, fields, field, code):
    merchant = create_merchant(infra, "backoffice-bad-refunds")
    intent = pay(mesh, merchant, amount=3000).body
    body = {
        "payment_intent": intent["id"],
        "amount": 100,
        "reason": "goodwill",
        "operator": "ann@example.com",
        "idempotency_key": f"bad-{field}-{time.time_ns()}",
        **fields,
    }

    error = refused(office, "RefundPayment", pb2.RefundPaymentRequest(**body))

    assert error.code() == code
    assert field in error.details()
    assert refunds_at_psp(mesh, psp_reference(infra, intent["id"])) == []


def test_a_merchant_key_or_another_identity_is_refused(office, backoffice_token, merchant):
    request = pb2.SearchPaymentsRequest()
    with_api_key = refused(
        office,
        "SearchPayments",
        request,
        metadata=(("authorization", merchant.auth()["authorization"]),),
    )
    as_vault = refused(
        office,
        "SearchPayments",
        request,
        metadata=(("x-paymesh-service-token", backoffice_token("vault")),),
    )

    assert with_api_key.code() == grpc.StatusCode.PERMISSION_DENIED
    assert as_vault.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_back_office_may_call_the_admin_services_too(mesh, backoffice_token):
    for service, method in ((ADMIN, "ListMerchants"), (RECONCILIATION, "ListMismatches")):
        done = grpcurl_as(mesh, backoffice_token(), f"{service}/{method}")
        assert done.returncode == 0, done.stderr


def grpcurl_as(mesh, token: str, full_method: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-H",
            f"x-paymesh-service-token: {token}",
            "-d",
            "{}",
            f"127.0.0.1:{mesh.ports.grpc['gateway']}",
            full_method,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def dispute_status(infra, intent_id: str) -> str | None:
    with psycopg.connect(infra.database_url) as db:
        row = db.execute(
            "SELECT status FROM gateway.disputes WHERE payment_intent = %s", (intent_id,)
        ).fetchone()
    return row and row[0]


def test_disputes_show_their_evidence_due_date_and_open_ones_are_found(office, infra, mesh):
    merchant = create_merchant(infra, "backoffice-disputes")
    intent = pay(mesh, merchant, amount=2000).body
    charge = psp_reference(infra, intent["id"])
    at_psp = sandbox(mesh, f"/_dashboard/charges/{charge}/dispute", {"amount": 2000})
    wait_until(lambda: dispute_status(infra, intent["id"]) == "needs_response", timeout=20)

    found = office(
        "SearchDisputes", pb2.SearchDisputesRequest(status="open", merchant_id=merchant.id)
    )

    [summary] = found.data
    assert (summary.dispute.payment_intent, summary.merchant_id) == (intent["id"], merchant.id)
    due = summary.evidence_due_by.ToSeconds()
    assert due == at_psp["evidence_details"]["due_by"]
    closed = office(
        "SearchDisputes", pb2.SearchDisputesRequest(status="won", merchant_id=merchant.id)
    )
    assert list(closed.data) == []
    error = refused(office, "SearchDisputes", pb2.SearchDisputesRequest(status="pending"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "status" in error.details()


def test_the_export_adds_up_to_what_the_psp_settled(office, infra, mesh):
    merchant = create_merchant(infra, "backoffice-export")
    start = datetime.now(UTC) - timedelta(seconds=1)
    kept = pay(mesh, merchant, amount=4000).body
    refunded = pay(mesh, merchant, amount=2500).body
    disputed = pay(mesh, merchant, amount=1500).body
    refund = post(mesh, merchant, "/v1/refunds", {"payment_intent": refunded["id"], "amount": 1000})
    assert refund.body["status"] == "succeeded", refund.body
    charge = psp_reference(infra, disputed["id"])
    psp_dispute = sandbox(mesh, f"/_dashboard/charges/{charge}/dispute", {})
    sandbox(mesh, f"/_dashboard/disputes/{psp_dispute['id']}/close", {"status": "won"})
    wait_until(lambda: dispute_status(infra, disputed["id"]) == "won", timeout=20)
    end = datetime.now(UTC) + timedelta(seconds=1)

    export = office(
        "ExportMoneyMovements",
        pb2.ExportMoneyMovementsRequest(
            merchant_id=merchant.id, **{"from": stamp(start), "to": stamp(end)}
        ),
    )

    charges = {psp_reference(infra, p["id"]) for p in (kept, refunded, disputed)}
    settled = [t for t in sandbox(mesh, "/v1/transactions")["data"] if t["charge"] in charges]
    rows = list(export.data)
    assert sum(r.amount for r in rows) == sum(t["amount"] for t in settled) == 4000 + 1500 + 1500
    as_exported = {"charge": "capture"}  # the sandbox names a capture as Stripe does
    assert sorted((r.type, r.amount) for r in rows) == sorted(
        (as_exported.get(t["type"], t["type"]), t["amount"]) for t in settled
    )
    assert {r.currency for r in rows} == {"USD"}
    assert all(r.psp == "sandbox" and r.psp_reference and not r.HasField("fee") for r in rows)
    assert [r.settled.ToDatetime() for r in rows] == sorted(r.settled.ToDatetime() for r in rows)
    missing = refused(office, "ExportMoneyMovements", pb2.ExportMoneyMovementsRequest())
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT and "from" in missing.details()
    no_end = refused(
        office, "ExportMoneyMovements", pb2.ExportMoneyMovementsRequest(**{"from": stamp(start)})
    )
    assert "to" in no_end.details()


def test_daily_stats_count_attempts_successes_volume_and_a_decline(office, shop):
    _, paid, before, _ = shop
    day = before.replace(hour=0, minute=0, second=0, microsecond=0)

    stats = office(
        "GetPaymentStats",
        pb2.GetPaymentStatsRequest(**{"from": stamp(day), "to": stamp(day + timedelta(days=1))}),
    )

    [sandbox_today] = [d for d in stats.days if d.psp == "sandbox"]
    assert sandbox_today.day == day.strftime("%Y-%m-%d")
    assert sandbox_today.attempted >= 3 and 2 <= sandbox_today.succeeded < sandbox_today.attempted
    assert sandbox_today.volume["usd"] >= int(paid[0]["amount"]) + int(paid[2]["amount"])
    declines = {d.code: d.count for d in stats.declines}
    assert declines.get("generic_decline", 0) >= 1
    counts = [d.count for d in stats.declines]
    assert counts == sorted(counts, reverse=True)
