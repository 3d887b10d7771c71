"""Correct under retries, crashes and failing PSPs: idempotency (sequential and 50 at once,
counted at the PSP), failover to Stripe, the circuit breaker's life cycle, a gateway killed
in the middle of a PSP call, and a tampered audit chain."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest

from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from tests.support.crash import PATIENT, kill_gateway, start_gateway
from tests.support.direct import gateway_call, vault_token
from tests.support.envelope import reason_of
from tests.support.http import call
from tests.support.mesh import BIN, base_env, migrated_database, paymesh
from tests.support.payments import post
from tests.support.psp import (
    breaker_state,
    charges_of,
    refunds_at_psp,
    requests_for,
    sandbox,
    wait_until_cooled_down,
)
from tests.support.vault import NEXT_YEAR, tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_the_same_key_and_request_replay_the_stored_answer(mesh, merchant):
    token = tokenize(mesh, merchant).body["id"]
    body = {"amount": 2500, "currency": "usd", "payment_method": token, "confirm": True}
    key = f"order-{uuid.uuid4()}"

    first = post(mesh, merchant, "/v1/payment_intents", body, key=key)
    again = post(mesh, merchant, "/v1/payment_intents", body, key=key)
    different = post(mesh, merchant, "/v1/payment_intents", {**body, "amount": 2600}, key=key)
    elsewhere = post(mesh, merchant, "/v1/payment_intents", body, key=key, live=True)

    assert first.status == 200 and "idempotent-replayed" not in first.headers
    assert again.status == 200
    assert again.body == first.body
    assert again.headers["idempotent-replayed"] == "true"
    assert different.status == 409
    assert reason_of(different) == "idempotency_key_reused"
    assert elsewhere.status != 409  # keys are scoped per mode (here: no such card in live)


def test_an_error_is_replayed_too(mesh, merchant):
    key = f"bad-{uuid.uuid4()}"
    body = {"amount": 0, "currency": "usd"}

    first = post(mesh, merchant, "/v1/payment_intents", body, key=key)
    again = post(mesh, merchant, "/v1/payment_intents", body, key=key)

    assert first.status == again.status == 400
    assert without_request_info(again.body) == without_request_info(first.body)
    assert again.headers["idempotent-replayed"] == "true"


def without_request_info(envelope: dict) -> dict:
    """The error as stored under the key; RequestInfo names each request, the replay too."""
    details = [d for d in envelope["details"] if not d["@type"].endswith("RequestInfo")]
    return {**envelope, "details": details}


def test_fifty_concurrent_requests_with_one_key_charge_exactly_once(mesh, merchant):
    token = tokenize(mesh, merchant).body["id"]
    body = {"amount": 4200, "currency": "usd", "payment_method": token, "confirm": True}
    key = f"storm-{uuid.uuid4()}"
    charges_before = sandbox(mesh, "/_stats")["charges_created"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(
            pool.map(
                lambda _: post(mesh, merchant, "/v1/payment_intents", body, key=key), range(50)
            )
        )

    succeeded = [r for r in responses if r.status == 200]
    in_use = [r for r in responses if r.status == 409]
    assert succeeded and len(succeeded) + len(in_use) == 50
    assert {r.body["id"] for r in succeeded} == {succeeded[0].body["id"]}
    assert all(reason_of(r) == "idempotency_key_in_use" for r in in_use)
    assert sandbox(mesh, "/_stats")["charges_created"] - charges_before == 1


def test_a_failing_sandbox_fails_over_to_stripe_then_the_breaker_opens_half_opens_and_closes(
    mesh, merchant, knobs
):
    knobs(error_rate=1.0)
    # The vault's failed attempts to create each card there fill the card window; it opens
    # (1) once they are half of its recent calls (earlier tests' cards count too).
    for _ in range(10):
        failed_over = post_payment(mesh, merchant)
        assert failed_over.status == 200, failed_over.body
        assert (failed_over.body["psp"], failed_over.body["status"]) == ("stripe", "succeeded")
        if breaker_state(mesh, "sandbox") == 1:
            break
    assert breaker_state(mesh, "sandbox") == 1

    charges_before = requests_for(mesh, "authorize")
    skipped = post_payment(mesh, merchant)
    assert skipped.body["psp"] == "stripe"
    assert requests_for(mesh, "authorize") == charges_before  # not even tried

    knobs(error_rate=0.0)
    wait_until_cooled_down(mesh, "sandbox")  # the next call is the half-open probe
    assert breaker_state(mesh, "sandbox") == 2
    recovered = post_payment(mesh, merchant)
    assert recovered.body["psp"] == "sandbox"
    assert breaker_state(mesh, "sandbox") == 0


def post_payment(mesh, merchant):
    token = tokenize(mesh, merchant).body["id"]
    return post(
        mesh,
        merchant,
        "/v1/payment_intents",
        {"amount": 700, "currency": "eur", "payment_method": token, "confirm": True},
    )


def test_a_decline_never_fails_over(mesh, merchant):
    charges_before = requests_for(mesh, "authorize")

    declined = post_payment_with(mesh, merchant, "4000000000000002")

    assert declined.body["status"] == "requires_payment_method"
    assert declined.body["psp"] == "sandbox"  # it declined there; stripe was never asked
    assert requests_for(mesh, "authorize") == charges_before + 1


def post_payment_with(mesh, merchant, number):
    token = tokenize(mesh, merchant, number).body["id"]
    return post(
        mesh,
        merchant,
        "/v1/payment_intents",
        {"amount": 700, "currency": "eur", "payment_method": token, "confirm": True},
    )


def cards_made(infra, token: str) -> int:
    """At how many PSPs the vault holds the card."""
    with psycopg.connect(infra.database_url) as db:
        [count] = db.execute(
            "SELECT count(*) FROM vault.psp_tokens WHERE payment_method = %s", (token,)
        ).fetchone()
    return count


def test_a_gateway_killed_mid_psp_call_is_recovered_by_the_sweep(fragile):
    mesh, infra, merchant = fragile
    metadata = tuple(merchant.auth().items())
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['vault']}") as channel:
        token = (
            vault_pb2_grpc.VaultServiceStub(channel)
            .CreatePaymentMethod(
                vault_pb2.CreatePaymentMethodRequest(
                    card=vault_pb2.CardInput(
                        number="4242424242424242", exp_month=12, exp_year=NEXT_YEAR, cvc="123"
                    )
                ),
                metadata=metadata,
                timeout=10,
            )
            .id
        )
    # The vault makes the card at every PSP right after tokenizing it: done before the sandbox
    # slows down, so the charge is the one request the slowness holds.
    wait_until(lambda: cards_made(infra, token) == 2, timeout=10)
    sandbox(mesh, "/_knobs", {"latency_ms": 1500})
    charges_before = requests_for(mesh, "authorize")
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}")
    in_flight = gateway_pb2_grpc.GatewayServiceStub(channel).CreatePaymentIntent.future(
        gateway_pb2.CreatePaymentIntentRequest(
            amount=3100, currency="usd", payment_method=token, confirm=True
        ),
        metadata=metadata,
        timeout=30,
    )

    def processing_at_sandbox():
        with psycopg.connect(infra.database_url) as db:
            return db.execute(
                "SELECT id FROM gateway.payment_intents WHERE payment_method = %s"
                " AND status = 'processing' AND psp = 'sandbox'",
                (token,),
            ).fetchone()

    [intent_id] = wait_until(processing_at_sandbox, timeout=10)
    # The charge is in flight at the sandbox.
    wait_until(lambda: requests_for(mesh, "authorize") >= charges_before + 1, timeout=10)
    mesh.processes["gateway"].send_signal(signal.SIGKILL)
    mesh.processes["gateway"].wait()
    with pytest.raises(grpc.RpcError):
        in_flight.result()
    channel.close()
    sandbox(mesh, "/_knobs", {"latency_ms": 0})

    mesh.spawn("gateway", [sys.executable, "-m", "gateway_svc"])

    def settled():
        with psycopg.connect(infra.database_url) as db:
            return db.execute(
                "SELECT status, amount_received FROM gateway.payment_intents WHERE id = %s",
                (intent_id,),
            ).fetchone()

    wait_until(lambda: settled()[0] != "processing", timeout=30)
    assert settled() == ("succeeded", 3100)  # the PSP had charged: the sweep found it
    with psycopg.connect(infra.database_url) as db:
        actors = [
            row[0]
            for row in db.execute(
                "SELECT actor FROM gateway.payment_audit"
                " WHERE object_id = %s AND action = 'confirm'",
                (intent_id,),
            )
        ]
    assert actors == ["worker"]
    with psycopg.connect(infra.database_url) as db:
        [attempt_key] = db.execute(
            "SELECT attempt_key FROM gateway.payment_intents WHERE id = %s", (intent_id,)
        ).fetchone()
    charges = sandbox(mesh, f"/v1/charges?idempotency_key={attempt_key}:sandbox")["data"]
    assert len(charges) == 1  # charged once, found once


@pytest.mark.parametrize("table", ["gateway.payment_audit", "rebill.rebill_audit"])
def test_a_tampered_audit_row_is_named_by_the_chain_check(table):
    with migrated_database("paymesh_audit_test") as infra:
        env = base_env(infra)
        with psycopg.connect(infra.database_url, autocommit=True) as db:
            for action in ("create", "confirm_started", "confirm"):
                db.execute(
                    f"INSERT INTO {table} (merchant_id, actor, action, object_id,"
                    " result, details) VALUES ('acct_a', 'api', %s, 'pi_1', 'ok', '{}')",
                    (action,),
                )
            assert json.loads(paymesh("audit", "verify", env=env)) == {"intact": True}
            # Someone with the owner's rights goes around the append-only trigger:
            db.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            [middle, chain] = db.execute(
                f"UPDATE {table} SET result = 'declined'"
                " WHERE action = 'confirm_started' RETURNING id, chain"
            ).fetchone()
        done = subprocess.run(
            [str(BIN / "paymesh"), "audit", "verify"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 1
        assert json.loads(done.stdout) == {
            "intact": False,
            "table": table,
            "first_broken_row": middle,
            "merchant_id": "acct_a",
            "chain": chain,
            "problem": "content does not match its hash",
        }


def test_concurrent_refunds_never_exceed_the_captured_amount(mesh, merchant):
    intent = post_payment(mesh, merchant).body
    assert intent["status"] == "succeeded"
    [charge] = charges_of(mesh, intent["id"])
    refunds_asked = requests_for(mesh, "refund")
    results = []

    def refund():
        results.append(
            post(mesh, merchant, "/v1/refunds", {"payment_intent": intent["id"], "amount": 300})
        )

    workers = [threading.Thread(target=refund) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert sum(r.status == 200 for r in results) == 2  # 2 x 300 <= 700 < 3 x 300
    # Judged by the PSP's ledger: it refunded the two, never more than it captured, and was
    # never asked for a refund beyond what was left (the gateway refused the four itself).
    assert refunds_at_psp(mesh, charge["id"]) == [-300, -300]
    at_psp = sandbox(mesh, f"/v1/charges/{charge['id']}")
    assert at_psp["amount_refunded"] == 600 <= at_psp["amount_captured"]
    assert requests_for(mesh, "refund") - refunds_asked == 2
    final = call(mesh.url(f"/v1/payment_intents/{intent['id']}"), headers=merchant.auth()).body
    assert final["amount_refunded"] == "600"


def test_a_refund_left_pending_by_a_crash_is_completed_once_by_the_sweep(fragile):
    mesh, infra, merchant = fragile
    kill_gateway(mesh)
    start_gateway(mesh, **PATIENT)
    request = gateway_pb2.CreatePaymentIntentRequest(
        amount=700, currency="eur", payment_method=vault_token(mesh, merchant), confirm=True
    )
    paid = gateway_call(mesh, merchant, "CreatePaymentIntent", request)
    assert paid.status == "succeeded"
    [charge] = charges_of(mesh, paid.id)
    refunds_asked = requests_for(mesh, "refund")
    # The crash's point: the PSP has refunded, and the gateway waits for its answer.
    sandbox(mesh, "/_knobs", {"ambiguous_rate": 1.0, "operations": ["refund"]})
    refund = gateway_pb2.CreateRefundRequest(payment_intent=paid.id, amount=200)
    with ThreadPoolExecutor(max_workers=1) as pool:
        refunding = pool.submit(gateway_call, mesh, merchant, "CreateRefund", refund, 60)
        wait_until(lambda: refunds_at_psp(mesh, charge["id"]), timeout=10)
        kill_gateway(mesh)
        sandbox(mesh, "/_knobs", {"ambiguous_rate": 0.0, "operations": []})
        with pytest.raises(grpc.RpcError) as cut:
            refunding.result(timeout=15)
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE

    def refunds():
        with psycopg.connect(infra.database_url) as db:
            return db.execute(
                "SELECT id, status FROM gateway.refunds WHERE payment_intent = %s", (paid.id,)
            ).fetchall()

    [(refund_id, status)] = refunds()
    assert status == "pending"  # the crash left it reserved, its outcome unknown
    start_gateway(mesh)

    wait_until(lambda: refunds() == [(refund_id, "succeeded")], timeout=60, interval=0.5)
    # The sweep asked the PSP again, under the refund's key: refunded once.
    assert requests_for(mesh, "refund") == refunds_asked + 2
    assert refunds_at_psp(mesh, charge["id"]) == [-200]
    assert sandbox(mesh, f"/v1/charges/{charge['id']}")["amount_refunded"] == 200
    settled = gateway_call(
        mesh, merchant, "GetPaymentIntent", gateway_pb2.GetPaymentIntentRequest(id=paid.id)
    )
    assert settled.amount_refunded == 200
