"""Money under the faults a real PSP and a real deployment have: answers lost after the work
is done, PSPs slower than our deadline, a gateway killed mid-call, a vault that is down,
racing captures, bad input in bulk, and concurrent audit writers. Each test is one defect
that charged, refunded or reported wrongly before; each fails if that promise breaks again.
The sandbox PSP's own ledger is the judge of what money moved."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest

from paymesh.gateway.v1 import gateway_pb2
from paymesh.platform.errors import reason_of as grpc_reason
from tests.support.crash import PATIENT, kill_gateway, start_gateway
from tests.support.envelope import reason_of
from tests.support.http import call
from tests.support.mesh import base_env, create_merchant, paymesh
from tests.support.payments import grpc_create, post, refund_when, route
from tests.support.psp import breaker_state, charges_of, sandbox
from tests.support.vault import grpc_token, tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def pay(mesh, merchant, key=None, **fields):
    token = tokenize(mesh, merchant).body["id"]
    body = {"amount": 1000, "currency": "usd", "payment_method": token, "confirm": True, **fields}
    return post(mesh, merchant, "/v1/payment_intents", body, key=key)


def intent(mesh, merchant, intent_id):
    return call(mesh.url(f"/v1/payment_intents/{intent_id}"), headers=merchant.auth()).body


def test_a_refund_whose_answer_is_lost_stays_pending_and_refunds_once(mesh, merchant, knobs):
    paid = pay(mesh, merchant).body
    assert paid["status"] == "succeeded"
    [charge] = charges_of(mesh, paid["id"])
    key = f"refund-{uuid.uuid4()}"
    body = {"payment_intent": paid["id"], "amount": 400}

    knobs(ambiguous_rate=1.0, operations=["refund"])  # refunded at the PSP, answer lost
    first = post(mesh, merchant, "/v1/refunds", body, key=key)
    retried = post(mesh, merchant, "/v1/refunds", body, key=key)
    knobs(ambiguous_rate=0.0, operations=[])

    assert first.status == 200, first.body
    assert first.body["status"] == "pending"  # unknown: the amount stays reserved
    assert retried.status == 200 and retried.body["id"] == first.body["id"]
    settled = refund_when(mesh, merchant, first.body["id"], "succeeded", timeout=30)
    assert settled["amount"] == "400"
    ledger = [c for c in charges_of(mesh, paid["id"]) if c["id"] == charge["id"]]
    assert ledger[0]["amount_refunded"] == 400  # once, whatever the retries
    assert intent(mesh, merchant, paid["id"])["amount_refunded"] == "400"


def test_a_retry_after_a_gateway_crash_leads_back_to_the_same_intent(fragile):
    mesh, infra, merchant = fragile
    kill_gateway(mesh)
    start_gateway(mesh, **PATIENT)
    token = grpc_token(mesh, merchant)
    key = f"order-{uuid.uuid4()}"
    request = gateway_pb2.CreatePaymentIntentRequest(
        amount=3300, currency="usd", payment_method=token, confirm=True
    )
    sandbox(mesh, "/_knobs", {"ambiguous_rate": 1.0, "operations": ["authorize"]})
    with ThreadPoolExecutor(max_workers=1) as pool:
        creating = pool.submit(grpc_create, mesh, merchant, request, key, 60)

        def processing():
            with psycopg.connect(infra.database_url) as db:
                return db.execute(
                    "SELECT id FROM gateway.payment_intents WHERE payment_method = %s"
                    " AND status = 'processing'",
                    (token,),
                ).fetchone()

        [intent_id] = wait_until(processing, timeout=10)
        # The crash's point: the PSP has charged, and the gateway waits for its answer.
        wait_until(lambda: charges_of(mesh, intent_id), timeout=10)
        kill_gateway(mesh)
        sandbox(mesh, "/_knobs", {"ambiguous_rate": 0.0, "operations": []})
        with pytest.raises(grpc.RpcError) as cut:
            creating.result(timeout=15)

    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE  # the connection died, no answer
    assert processing() == (intent_id,)  # the gateway recorded nothing of the charge
    start_gateway(mesh)

    def settled():
        with psycopg.connect(infra.database_url) as db:
            [status] = db.execute(
                "SELECT status FROM gateway.payment_intents WHERE id = %s", (intent_id,)
            ).fetchone()
        return status != "processing"

    wait_until(settled, timeout=40)
    retried, headers = grpc_create(mesh, merchant, request, key)

    assert retried.id == intent_id
    assert headers.get("idempotent-replayed") == "true"
    assert retried.status == "succeeded"
    assert len(charges_of(mesh, intent_id)) == 1


def test_a_late_authorization_is_settled_and_a_reconfirm_cannot_charge_again(
    mesh, infra, merchant, knobs
):
    payer = create_merchant(infra, f"late-{uuid.uuid4().hex[:6]}")
    route(infra, payer, "sandbox")
    token = tokenize(mesh, payer).body["id"]
    knobs(latency_ms=12_000, operations=["authorize"])  # slower than every deadline of ours
    body = {"amount": 1500, "currency": "usd", "payment_method": token, "confirm": True}
    sent = time.monotonic()
    first = post(mesh, payer, "/v1/payment_intents", body)
    knobs(latency_ms=0, operations=[])  # the first request is still on its way to processing

    assert first.status == 200, first.body
    assert first.body["status"] == "processing"  # unknown, and said so
    intent_id = first.body["id"]
    settled = wait_until(
        lambda: (i := intent(mesh, payer, intent_id))["status"] != "processing" and i, timeout=40
    )
    reconfirm = post(mesh, payer, f"/v1/payment_intents/{intent_id}/confirm")

    assert settled["status"] == "succeeded"
    assert reconfirm.status == 400 and reason_of(reconfirm) == "payment_intent_unexpected_state"
    # The slow first request lands at the PSP too: it meets the key's answer, no new charge.
    time.sleep(max(0.0, sent + 13 - time.monotonic()))
    assert len(charges_of(mesh, intent_id)) == 1


def test_audit_verify_holds_after_a_thousand_concurrent_writes_for_one_merchant(infra):
    merchant_id = f"acct_audit{uuid.uuid4().hex[:10]}"

    def write(n: int) -> None:
        with psycopg.connect(infra.database_url, autocommit=True) as db:
            for i in range(50):
                db.execute(
                    "INSERT INTO gateway.payment_audit (merchant_id, actor, action, object_id,"
                    " result, details) VALUES (%s, 'api', 'create', %s, 'ok', '{}')",
                    (merchant_id, f"pi_{n}_{i}"),
                )

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(write, range(20)))

    with psycopg.connect(infra.database_url) as db:
        [count] = db.execute(
            "SELECT count(*) FROM gateway.payment_audit WHERE merchant_id = %s", (merchant_id,)
        ).fetchone()
    assert count == 1000
    assert json.loads(paymesh("audit", "verify", env=base_env(infra))) == {"intact": True}


def test_concurrent_partial_captures_capture_once_what_the_psp_captured(mesh, merchant, knobs):
    authorized = pay(mesh, merchant, capture_method="manual").body
    assert authorized["status"] == "requires_capture"
    knobs(latency_ms=300, operations=["capture"])  # both captures are in flight together
    results = []

    def capture(amount):
        path = f"/v1/payment_intents/{authorized['id']}/capture"
        results.append(post(mesh, merchant, path, {"amount_to_capture": amount}))

    workers = [threading.Thread(target=capture, args=(a,)) for a in (600, 400)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    won = [r for r in results if r.status == 200]
    lost = [r for r in results if r.status != 200]
    assert len(won) == 1 and len(lost) == 1, [r.body for r in results]
    assert lost[0].status == 400 and reason_of(lost[0]) == "payment_intent_unexpected_state"
    [charge] = charges_of(mesh, authorized["id"])
    final = intent(mesh, merchant, authorized["id"])
    assert (
        final["amount_received"] == str(charge["amount_captured"]) == won[0].body["amount_received"]
    )


def test_a_detached_card_is_a_decline_and_a_missing_one_writes_nothing(mesh, merchant, infra):
    token = tokenize(mesh, merchant).body["id"]
    detached = post(mesh, merchant, f"/v1/payment_methods/{token}/detach")
    assert detached.status == 200
    with psycopg.connect(infra.database_url) as db:
        [before] = db.execute("SELECT count(*) FROM gateway.payment_intents").fetchone()

    declined = post(
        mesh,
        merchant,
        "/v1/payment_intents",
        {"amount": 500, "currency": "usd", "payment_method": token, "confirm": True},
    )
    missing = post(
        mesh,
        merchant,
        "/v1/payment_intents",
        {"amount": 500, "currency": "usd", "payment_method": "pm_missing0000", "confirm": True},
    )

    assert declined.status == 200, declined.body
    assert declined.body["status"] == "requires_payment_method"
    assert declined.body["last_payment_error"]["decline_code"] == "payment_method_detached"
    assert missing.status == 400, missing.body
    with psycopg.connect(infra.database_url) as db:
        [after] = db.execute("SELECT count(*) FROM gateway.payment_intents").fetchone()
    assert after == before + 1  # the declined one; the missing card wrote nothing


def test_a_vault_that_is_down_is_a_retryable_503_not_a_decline(fragile):
    mesh, infra, merchant = fragile
    token = grpc_token(mesh, merchant)
    mesh.processes["vault"].send_signal(signal.SIGKILL)
    mesh.processes["vault"].wait()
    with psycopg.connect(infra.database_url) as db:
        [before] = db.execute("SELECT count(*) FROM gateway.payment_intents").fetchone()
    request = gateway_pb2.CreatePaymentIntentRequest(
        amount=500, currency="usd", payment_method=token, confirm=True
    )

    with pytest.raises(grpc.RpcError) as raised:
        grpc_create(mesh, merchant, request)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert grpc_reason(raised.value) == "vault_unavailable"
    with psycopg.connect(infra.database_url) as db:
        [after] = db.execute("SELECT count(*) FROM gateway.payment_intents").fetchone()
    assert after == before


def test_a_timeout_never_fails_over_and_the_slow_psp_keeps_the_only_charge(
    mesh, infra, merchant, knobs
):
    payer = create_merchant(infra, f"slow-{uuid.uuid4().hex[:6]}")
    route(infra, payer, "sandbox", "stripe")
    token = tokenize(mesh, payer).body["id"]
    knobs(latency_ms=6_000, operations=["authorize"])
    body = {"amount": 2100, "currency": "usd", "payment_method": token, "confirm": True}

    first = post(mesh, payer, "/v1/payment_intents", body)
    knobs(latency_ms=0, operations=[])

    assert first.status == 200, first.body
    assert (first.body["status"], first.body["psp"]) == ("processing", "sandbox")
    settled = wait_until(
        lambda: (i := intent(mesh, payer, first.body["id"]))["status"] != "processing" and i,
        timeout=40,
    )
    assert (settled["status"], settled["psp"]) == ("succeeded", "sandbox")
    assert len(charges_of(mesh, first.body["id"])) == 1


def test_a_merchants_bad_input_never_opens_the_breakers_for_everyone(mesh, merchant, infra):
    attacker = create_merchant(infra, f"bad-{uuid.uuid4().hex[:6]}")
    body = {"amount": 500, "currency": "usd", "payment_method": "pm_doesnotexist", "confirm": True}

    refused = [post(mesh, attacker, "/v1/payment_intents", body) for _ in range(10)]

    assert {r.status for r in refused} == {400}
    assert breaker_state(mesh, "sandbox") == 0
    assert breaker_state(mesh, "stripe") == 0
    honest = pay(mesh, merchant)
    assert (honest.status, honest.body["psp"]) == (200, "sandbox")


def key_row_dies(infra, intent_id: str) -> None:
    """The key's request as if its process died mid-call two minutes ago: still running,
    bound to the intent, no answer recorded."""
    with psycopg.connect(infra.database_url, autocommit=True) as db:
        changed = db.execute(
            "UPDATE gateway.idempotency_keys SET locked_at = now() - interval '2 minutes',"
            " response = NULL WHERE object_id = %s AND state = 'running'",
            (intent_id,),
        ).rowcount
    assert changed == 1


@pytest.mark.parametrize(
    ("verb", "operation", "settled"),
    [("capture", "capture", "succeeded"), ("cancel", "void", "canceled")],
)
def test_a_retry_of_an_operation_whose_outcome_is_unknown_says_so_until_it_is_settled(
    mesh, merchant, infra, knobs, verb, operation, settled
):
    authorized = pay(mesh, merchant, amount=3000, capture_method="manual")
    assert authorized.status == 200 and authorized.body["status"] == "requires_capture"
    intent_id = authorized.body["id"]
    knobs(ambiguous_rate=1, operations=[operation])  # the PSP does it; its answer is lost
    key = f"unknown-{uuid.uuid4()}"
    path = f"/v1/payment_intents/{intent_id}/{verb}"

    def assert_outcome_unknown(response) -> None:
        assert response.status == 503, response.body
        assert reason_of(response) == "psp_outcome_unknown"
        assert int(response.headers["retry-after"]) > 0
        assert "idempotent-replayed" not in response.headers

    assert_outcome_unknown(post(mesh, merchant, path, key=key))
    started = time.monotonic()
    assert_outcome_unknown(post(mesh, merchant, path, key=key))  # not a 409, nor a replay
    assert time.monotonic() - started < 2  # answered at once, not after waiting for the key
    key_row_dies(infra, intent_id)  # an old request's key, still unsettled
    assert_outcome_unknown(post(mesh, merchant, path, key=key))

    knobs(ambiguous_rate=0)  # the sweep can now learn what the PSP did, and settles the key
    replay = wait_until(
        lambda: (r := post(mesh, merchant, path, key=key)).status == 200 and r, timeout=30
    )
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.body["status"] == settled
    assert replay.body["amount_received"] == ("3000" if verb == "capture" else "0")  # int64


def error_info(response) -> dict:
    [info] = [d for d in response.body["details"] if d["@type"].endswith("ErrorInfo")]
    return info


def assert_tells_keyless_caller_the_truth(response, intent_id: str) -> None:
    """A 503 to a request without an Idempotency-Key: it names the intent and where its
    outcome will show, and advises no key the request never had."""
    assert response.status == 503, response.body
    message = response.body["message"]
    assert intent_id in message
    assert f"GET /v1/payment_intents/{intent_id}" in message
    assert "event" in message
    assert "idempotency" not in message.lower()
    assert error_info(response)["metadata"]["payment_intent"] == intent_id


def test_a_keyless_capture_whose_answer_is_lost_names_its_intent_not_a_key(mesh, merchant, knobs):
    authorized = pay(mesh, merchant, capture_method="manual").body
    assert authorized["status"] == "requires_capture", authorized

    knobs(ambiguous_rate=1.0, operations=["capture"])  # captured at the PSP, answer lost
    lost = post(mesh, merchant, f"/v1/payment_intents/{authorized['id']}/capture")
    knobs(ambiguous_rate=0.0, operations=[])

    assert reason_of(lost) == "psp_outcome_unknown"
    assert_tells_keyless_caller_the_truth(lost, authorized["id"])
    settled = wait_until(
        lambda: (i := intent(mesh, merchant, authorized["id"]))["status"] == "succeeded" and i,
        timeout=40,
    )
    assert settled["amount_received"] == "1000"


def test_a_keyless_confirm_cut_by_a_crash_names_its_intent_not_a_key(fragile):
    mesh, infra, merchant = fragile
    kill_gateway(mesh)
    start_gateway(mesh, **PATIENT)
    mesh.start_envoy()
    mesh.wait_until([mesh.url("/healthz")], 30)
    wait_until(  # Envoy has seen the gateway healthy
        lambda: (
            call(mesh.url("/v1/payment_intents/pi_missing"), headers=merchant.auth()).status == 404
        ),
        timeout=30,
        interval=0.5,
    )
    token = tokenize(mesh, merchant).body["id"]
    created = post(mesh, merchant, "/v1/payment_intents", {"amount": 2100, "currency": "usd"})
    intent_id = created.body["id"]
    sandbox(mesh, "/_knobs", {"ambiguous_rate": 1.0, "operations": ["authorize"]})
    answers = []
    confirming = threading.Thread(
        target=lambda: answers.append(
            post(
                mesh,
                merchant,
                f"/v1/payment_intents/{intent_id}/confirm",
                {"payment_method": token},
            )
        ),
        daemon=True,
    )
    confirming.start()
    wait_until(lambda: intent(mesh, merchant, intent_id)["status"] == "processing", timeout=10)
    # The crash's point: the PSP has charged, and the gateway waits for its answer.
    wait_until(lambda: charges_of(mesh, intent_id), timeout=10)
    kill_gateway(mesh)
    confirming.join(timeout=15)
    sandbox(mesh, "/_knobs", {"ambiguous_rate": 0.0, "operations": []})

    [cut] = answers
    assert_tells_keyless_caller_the_truth(cut, intent_id)
    # What the answer promised: GET shows the outcome once the restarted gateway settles it.
    start_gateway(mesh)
    settled = wait_until(  # (503 until Envoy has seen the new gateway healthy)
        lambda: (
            (i := intent(mesh, merchant, intent_id)).get("status") not in (None, "processing") and i
        ),
        timeout=40,
        interval=0.5,
    )
    assert settled["status"] == "succeeded"
    assert len(charges_of(mesh, intent_id)) == 1
