"""Inbound PSP webhooks through Envoy: the sandbox PSP's events (captures, refunds and disputes
made at the PSP, each sent N times and out of order), localstripe's real signed webhooks,
hand-signed events for what the PSPs will not send on demand, and every refusal: missing,
bad and stale signatures (400, nothing recorded) and bodies over 1 MiB (413)."""

from __future__ import annotations

import json
import secrets
import time
import uuid

import grpc
import pytest

from paymesh.gateway.v1 import psp_events_pb2, psp_events_pb2_grpc
from paymesh.platform.service_auth import TokenIssuer
from tests.support.envelope import reason_of
from tests.support.http import call
from tests.support.mesh import create_merchant
from tests.support.metrics import metric
from tests.support.payments import pay, post, route
from tests.support.psp import sandbox
from tests.support.psp_webhooks import (
    SANDBOX_SECRET,
    STRIPE_SECRET,
    dashboard,
    db,
    intent_row,
    send,
    signed,
)
from tests.support.waiting import wait_until
from webhook_svc.inbound.psp_signatures import sign

pytestmark = pytest.mark.integration

WEBHOOK_KNOBS = {"webhook_copies": 1, "webhook_hold": False, "webhook_order": "in_order"}


@pytest.fixture
def webhook_knobs(mesh):
    yield lambda **values: sandbox(mesh, "/_knobs", values)
    sandbox(mesh, "/_webhooks/flush", {})
    sandbox(mesh, "/_knobs", WEBHOOK_KNOBS)


def event(event_type: str, obj: dict, created: int | None = None) -> dict:
    return {
        "id": f"evt_test_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "created": created or int(time.time()),
        "data": {"object": obj},
    }


def audits(infra, object_ids: list[str]) -> list[tuple[str, str, str]]:
    with db(infra) as connection:
        return connection.execute(
            "SELECT actor, action, result FROM gateway.payment_audit"
            " WHERE object_id = ANY(%s) ORDER BY id",
            (object_ids,),
        ).fetchall()


def outbox_types(infra, aggregate_ids: list[str]) -> list[str]:
    with db(infra) as connection:
        return [
            row[0]
            for row in connection.execute(
                "SELECT event_type FROM gateway.outbox WHERE aggregate_id = ANY(%s) ORDER BY id",
                (aggregate_ids,),
            ).fetchall()
        ]


def refunds_of(infra, intent_id: str) -> list[tuple]:
    with db(infra) as connection:
        return connection.execute(
            "SELECT id, amount, status, psp_reference FROM gateway.refunds"
            " WHERE payment_intent = %s ORDER BY created_at",
            (intent_id,),
        ).fetchall()


def inbox(infra, psp: str, event_id: str):
    with db(infra) as connection:
        return connection.execute(
            "SELECT status, reason, deliveries FROM webhook.psp_inbox"
            " WHERE psp = %s AND event_id = %s",
            (psp, event_id),
        ).fetchone()


def inbox_of_intent(infra, intent_id: str) -> list[tuple]:
    with db(infra) as connection:
        return connection.execute(
            "SELECT event_type, status, reason, deliveries FROM webhook.psp_inbox"
            " WHERE payment_intent = %s ORDER BY received_at",
            (intent_id,),
        ).fetchall()


def authorized(mesh, merchant, infra, amount: int = 1000) -> tuple[str, str]:
    """A manual-capture intent at the sandbox: (intent id, the sandbox's charge id)."""
    intent = pay(mesh, merchant, capture_method="manual", amount=amount).body
    assert intent["status"] == "requires_capture", intent
    return intent["id"], intent_row(infra, intent["id"])["psp_reference"]


def deliveries_of(mesh, event_ids: set[str]) -> list[dict]:
    return [d for d in sandbox(mesh, "/_webhooks")["data"] if d["event"] in event_ids]


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("psp", ["sandbox", "stripe"])
def test_missing_bad_or_stale_signatures_are_400_and_nothing_is_recorded(mesh, infra, psp):
    header = "stripe-signature" if psp == "stripe" else "sandbox-signature"
    secret = STRIPE_SECRET if psp == "stripe" else SANDBOX_SECRET
    cases = {}
    for name in ("missing", "bad", "wrong_secret", "stale", "future", "tampered", "no_v1"):
        body_event = event("charge.captured", {"id": "ch_nope", "amount_captured": 1})
        body = json.dumps(body_event).encode()
        headers = {
            "missing": {},
            "bad": {header: "t=123,v1=deadbeef"},
            "wrong_secret": {header: sign(body, "whsec_someone_else")},
            "stale": {header: sign(body, secret, int(time.time()) - 301)},
            "future": {header: sign(body, secret, int(time.time()) + 301)},
            "tampered": {header: sign(body, secret)},
            "no_v1": {header: f"t={int(time.time())}"},
        }[name]
        if name == "tampered":
            body = body.replace(b'"amount_captured": 1', b'"amount_captured": 9')
        cases[name] = (body_event["id"], send(mesh, psp, body, headers))

    reasons = {name: reason_of(answer) for name, (_, answer) in cases.items()}
    assert {name: answer.status for name, (_, answer) in cases.items()} == dict.fromkeys(cases, 400)
    assert reasons == {
        "missing": "missing_signature",
        "bad": "invalid_signature",
        "wrong_secret": "invalid_signature",
        "stale": "stale_signature",
        "future": "stale_signature",
        "tampered": "invalid_signature",
        "no_v1": "invalid_signature",
    }
    for event_id, _ in cases.values():
        assert inbox(infra, psp, event_id) is None


def test_several_v1_signatures_one_of_which_matches_are_accepted(mesh, infra):
    body_event = event("charge.captured", {"id": f"ch_{uuid.uuid4().hex}", "amount_captured": 5})
    body = json.dumps(body_event).encode()
    good = sign(body, SANDBOX_SECRET)
    t, v1 = good.split(",")
    answer = send(mesh, "sandbox", body, {"sandbox-signature": f"{t},v1=00ff,v0=abc,{v1}"})

    assert answer.status == 200, answer.body
    assert answer.body["outcome"] == "ignored" and answer.body["reason"] == "unknown_payment"
    assert inbox(infra, "sandbox", body_event["id"])[:2] == ("ignored", "unknown_payment")


def test_a_body_over_1_mib_is_413_and_an_unknown_psp_404(mesh):
    big = b'{"id": "evt_big", "pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'

    too_large = send(mesh, "sandbox", big, {"sandbox-signature": sign(big, SANDBOX_SECRET)})
    unknown = signed(mesh, "paypal", event("charge.captured", {}))

    assert too_large.status == 413 and reason_of(too_large) == "body_too_large"
    assert unknown.status == 404


def refused_count(mesh, psp: str) -> float:
    metrics = call(f"http://127.0.0.1:{mesh.ports.http['webhook']}/metrics").body
    wanted = f'webhook_psp_events_total{{outcome="refused",psp="{psp}"}}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(wanted))


@pytest.mark.parametrize("psp", ["sandbox", "stripe"])
def test_a_signed_event_created_at_an_impossible_time_is_400_and_recorded_as_refused(
    mesh, infra, psp
):
    """Year 31 million, year −29 700, 2^63 s: a time no PSP event has (these were a 500,
    which the PSP sends again and again). Refused like any unreadable event: nothing in the
    inbox, counted as refused; and a well-formed event right after is handled as before."""
    before = refused_count(mesh, psp)
    refused = {}
    for created in (10**15, -(10**12), 2**63):
        bad = event("charge.updated", {"id": "ch_x"}, created=created)
        refused[created] = (bad["id"], signed(mesh, psp, bad))

    for created, (event_id, answer) in refused.items():
        assert answer.status == 400, (created, answer.status, answer.body)
        assert reason_of(answer) == "invalid_event"
        [bad_request] = [d for d in answer.body["details"] if d["@type"].endswith("BadRequest")]
        assert [v["field"] for v in bad_request["field_violations"]] == ["created"]
        assert inbox(infra, psp, event_id) is None
    assert refused_count(mesh, psp) - before == 3

    normal = event("charge.updated", {"id": "ch_x"})
    answer = signed(mesh, psp, normal)
    assert answer.status == 200 and answer.body["outcome"] == "ignored", answer.body
    assert inbox(infra, psp, normal["id"])[:2] == ("ignored", "unsupported_event")


def test_no_api_key_is_needed_and_unsupported_events_are_recorded_as_ignored(mesh):
    answer = signed(mesh, "sandbox", event("charge.updated", {"id": "ch_x"}))

    assert answer.status == 200 and answer.body["outcome"] == "ignored"
    assert answer.body["reason"] == "unsupported_event"


# --- the sandbox PSP's own webhooks ---------------------------------------------------------


def test_a_capture_at_the_psp_sent_ten_times_is_applied_once(mesh, infra, merchant, webhook_knobs):
    intent_id, charge = authorized(mesh, merchant, infra)
    webhook_knobs(webhook_copies=10)

    dashboard(mesh, charge, "capture")

    wait_until(lambda: intent_row(infra, intent_id)["status"] == "succeeded", timeout=20)
    wait_until(lambda: (rows := inbox_of_intent(infra, intent_id)) and rows[0][3] == 10, timeout=20)
    row = intent_row(infra, intent_id)
    assert (row["amount_received"], row["amount_capturable"]) == (1000, 0)
    assert [a for a in audits(infra, [intent_id]) if a[0] == "webhook"] == [
        ("webhook", "capture", "ok")
    ]
    assert outbox_types(infra, [intent_id]).count("payment_intent.succeeded") == 1
    [(event_type, status, _, deliveries)] = inbox_of_intent(infra, intent_id)
    assert (event_type, status, deliveries) == ("charge.captured", "applied", 10)
    fetched = call(mesh.url(f"/v1/payment_intents/{intent_id}"), headers=merchant.auth()).body
    assert (fetched["status"], fetched["amount_received"]) == ("succeeded", "1000")


def test_events_out_of_order_end_where_the_psp_is_and_never_move_backwards(
    mesh, infra, merchant, webhook_knobs
):
    intent_id, charge = authorized(mesh, merchant, infra)
    webhook_knobs(webhook_hold=True, webhook_order="reverse", webhook_copies=3)
    dashboard(mesh, charge, "capture")
    first = dashboard(mesh, charge, "refund", amount=300)
    second = dashboard(mesh, charge, "refund", amount=200)

    sandbox(mesh, "/_webhooks/flush", {})  # the refunds first: they wait for the capture

    wait_until(lambda: intent_row(infra, intent_id)["amount_refunded"] == 500, timeout=30)
    row = intent_row(infra, intent_id)
    assert (row["status"], row["amount_received"], row["amount_refunded"]) == (
        "succeeded",
        1000,
        500,
    )
    recorded = refunds_of(infra, intent_id)
    assert sorted((r[1], r[2], r[3]) for r in recorded) == sorted(
        [(300, "succeeded", first["id"]), (200, "succeeded", second["id"])]
    )
    webhook_audits = [a for a in audits(infra, [intent_id, *(r[0] for r in recorded)])]
    assert sorted(a for a in webhook_audits if a[0] == "webhook") == sorted(
        [
            ("webhook", "capture", "ok"),
            ("webhook", "refund_at_psp", "succeeded"),
            ("webhook", "refund_at_psp", "succeeded"),
        ]
    )
    events = outbox_types(infra, [intent_id, *(r[0] for r in recorded)])
    assert events.count("payment_intent.succeeded") == 1
    assert events.count("refund.succeeded") == 2
    # Some refund deliveries were answered 503 (the capture had not come) and sent again.
    statuses = [d["status"] for d in sandbox(mesh, "/_webhooks")["data"]]
    assert 503 in statuses
    wait_until(
        lambda: all(s == "applied" for _, s, _, _ in inbox_of_intent(infra, intent_id)),
        timeout=30,
    )

    # A capture report of another amount, newer than all of them, moves nothing back.
    late = signed(
        mesh,
        "sandbox",
        event("charge.captured", {"id": charge, "amount_captured": 400, "currency": "usd"}),
    )
    assert late.status == 200
    assert (late.body["outcome"], late.body["reason"]) == ("ignored", "amount_mismatch")
    assert intent_row(infra, intent_id) == row


def test_a_refund_paymesh_made_is_never_counted_twice(mesh, infra, merchant):
    intent_id = pay(mesh, merchant).body["id"]

    refund = post(mesh, merchant, "/v1/refunds", {"payment_intent": intent_id, "amount": 400})

    assert refund.status == 200, refund.body
    wait_until(
        lambda: any(
            t == "charge.refunded" and s == "already_applied"
            for t, s, _, _ in inbox_of_intent(infra, intent_id)
        ),
        timeout=20,
    )
    assert intent_row(infra, intent_id)["amount_refunded"] == 400
    assert len(refunds_of(infra, intent_id)) == 1
    assert not [a for a in audits(infra, [intent_id, refund.body["id"]]) if a[0] == "webhook"]


def test_a_refund_report_beyond_what_was_captured_changes_nothing(mesh, infra, merchant):
    intent_id = pay(mesh, merchant, amount=1000).body["id"]
    charge = intent_row(infra, intent_id)["psp_reference"]

    def refund_event(amount: int) -> dict:
        refund = {"id": f"rf_{uuid.uuid4().hex}", "object": "refund", "charge": charge}
        return event("charge.refunded", {**refund, "amount": amount, "currency": "usd"})

    too_much = signed(mesh, "sandbox", refund_event(1001))
    part = signed(mesh, "sandbox", refund_event(900))
    beyond = signed(mesh, "sandbox", refund_event(101))

    assert (too_much.body["outcome"], too_much.body["reason"]) == ("ignored", "amount_mismatch")
    assert part.body["outcome"] == "applied"
    assert (beyond.body["outcome"], beyond.body["reason"]) == ("ignored", "amount_mismatch")
    assert intent_row(infra, intent_id)["amount_refunded"] == 900


def test_a_dispute_is_recorded_once_and_leaves_the_intent_as_it_was(
    mesh, infra, merchant, webhook_knobs
):
    intent_id = pay(mesh, merchant).body["id"]
    charge = intent_row(infra, intent_id)["psp_reference"]
    before = intent_row(infra, intent_id)
    webhook_knobs(webhook_copies=3)

    at_psp = dashboard(mesh, charge, "dispute", reason="fraudulent")

    wait_until(lambda: "payment_intent.disputed" in outbox_types(infra, [intent_id]), timeout=20)
    wait_until(
        lambda: (
            (rows := inbox_of_intent(infra, intent_id))
            and any(r[0] == "charge.dispute.created" and r[3] == 3 for r in rows)
        ),
        timeout=20,
    )
    assert outbox_types(infra, [intent_id]).count("payment_intent.disputed") == 1
    with db(infra) as connection:
        [(dispute_id, reference)] = connection.execute(
            "SELECT id, psp_reference FROM gateway.disputes WHERE payment_intent = %s",
            (intent_id,),
        ).fetchall()
    assert reference == at_psp["id"]
    assert outbox_types(infra, [dispute_id]) == ["charge.dispute.created"]
    assert audits(infra, [dispute_id]) == [("webhook", "dispute_opened", "needs_response")]
    assert not [a for a in audits(infra, [intent_id]) if a[0] == "webhook"]
    assert intent_row(infra, intent_id) == before


def test_webhook_lag_seconds_is_observed(mesh, infra, merchant):
    intent_id, charge = authorized(mesh, merchant, infra)
    dashboard(mesh, charge, "capture")
    wait_until(lambda: intent_row(infra, intent_id)["status"] == "succeeded", timeout=20)

    metrics = call(f"http://127.0.0.1:{mesh.ports.http['webhook']}/metrics").body

    [count] = [
        line
        for line in metrics.splitlines()
        if line.startswith('webhook_lag_seconds_count{psp="sandbox"}')
    ]
    assert float(count.split()[-1]) >= 1


# --- the PSP's echo of our own capture ---------------------------------------------------


def gateway_psp_events(mesh) -> float:
    """Every PSP event the gateway was asked to apply, whatever its outcome."""
    return metric(mesh.ports.http["gateway"], "gateway_psp_events_total", psp="sandbox")


def recorded_success(infra, intent_id: str) -> bool:
    """webhook_svc has stored the gateway's own event of the intent's success."""
    with db(infra) as connection:
        return bool(
            connection.execute(
                "SELECT 1 FROM webhook.events"
                " WHERE object_id = %s AND type = 'payment_intent.succeeded'",
                (intent_id,),
            ).fetchone()
        )


def test_the_echo_of_our_own_capture_is_recorded_without_asking_the_gateway(
    mesh, infra, merchant, webhook_knobs
):
    webhook_knobs(webhook_hold=True)
    intent = pay(mesh, merchant, amount=1300).body
    assert intent["status"] == "succeeded", intent
    wait_until(lambda: recorded_success(infra, intent["id"]), timeout=20)
    asked_before = gateway_psp_events(mesh)

    sandbox(mesh, "/_webhooks/flush", {})

    wait_until(lambda: inbox_of_intent(infra, intent["id"]), timeout=20)
    assert inbox_of_intent(infra, intent["id"]) == [
        ("charge.captured", "already_applied", "echo_of_recorded_event", 1)
    ]
    assert gateway_psp_events(mesh) == asked_before
    row = intent_row(infra, intent["id"])
    assert (row["status"], row["amount_received"]) == ("succeeded", 1300)
    assert not [a for a in audits(infra, [intent["id"]]) if a[0] == "webhook"]


def test_a_capture_report_that_differs_from_the_recorded_one_still_goes_to_the_gateway(
    mesh, infra, merchant
):
    intent_id = pay(mesh, merchant, amount=1300).body["id"]
    charge = intent_row(infra, intent_id)["psp_reference"]
    wait_until(lambda: recorded_success(infra, intent_id), timeout=20)
    wait_until(lambda: inbox_of_intent(infra, intent_id), timeout=20)  # the sandbox's echo
    asked_before = gateway_psp_events(mesh)
    captured = {"id": charge, "object": "charge", "currency": "usd", "status": "captured"}

    other_amount = signed(
        mesh, "sandbox", event("charge.captured", {**captured, "amount_captured": 1299})
    )
    other_currency = signed(
        mesh,
        "sandbox",
        event("charge.captured", {**captured, "amount_captured": 1300, "currency": "eur"}),
    )

    assert (other_amount.body["outcome"], other_amount.body["reason"]) == (
        "ignored",
        "amount_mismatch",
    )
    assert (other_currency.body["outcome"], other_currency.body["reason"]) == (
        "ignored",
        "currency_mismatch",
    )
    assert gateway_psp_events(mesh) == asked_before + 2
    assert intent_row(infra, intent_id)["amount_received"] == 1300


def test_a_refund_at_the_psp_after_an_echo_is_applied_through_the_gateway(mesh, infra, merchant):
    intent_id = pay(mesh, merchant, amount=1300).body["id"]
    charge = intent_row(infra, intent_id)["psp_reference"]
    wait_until(lambda: inbox_of_intent(infra, intent_id), timeout=20)  # the sandbox's echo

    dashboard(mesh, charge, "refund", amount=300)

    wait_until(lambda: intent_row(infra, intent_id)["amount_refunded"] == 300, timeout=20)
    wait_until(lambda: len(inbox_of_intent(infra, intent_id)) == 2, timeout=20)
    assert [(t, s) for t, s, _, _ in inbox_of_intent(infra, intent_id)] == [
        ("charge.captured", "already_applied"),
        ("charge.refunded", "applied"),
    ]
    assert [a for a in audits(infra, [intent_id]) if a[0] == "webhook"] == []
    [(refund_id, amount, status, _)] = refunds_of(infra, intent_id)
    assert (amount, status) == (300, "succeeded")
    assert ("webhook", "refund_at_psp", "succeeded") in audits(infra, [refund_id])


def test_an_echo_that_comes_before_the_gateways_own_event_is_applied_by_the_gateway(
    mesh, infra, merchant
):
    """The PSP's webhook can overtake the gateway's event on its way to webhook_svc: held
    here by a lock that keeps webhook_svc from storing any event until the echo is settled."""
    asked_before = gateway_psp_events(mesh)
    with db(infra) as holder:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE webhook.events IN SHARE ROW EXCLUSIVE MODE")
        intent_id = pay(mesh, merchant, amount=1300).body["id"]
        wait_until(lambda: inbox_of_intent(infra, intent_id), timeout=20)
        assert not recorded_success(infra, intent_id)
        holder.execute("ROLLBACK")

    [(event_type, status, reason, _)] = inbox_of_intent(infra, intent_id)
    assert (event_type, status, reason) == ("charge.captured", "already_applied", None)
    assert gateway_psp_events(mesh) > asked_before
    wait_until(lambda: recorded_success(infra, intent_id), timeout=20)
    row = intent_row(infra, intent_id)
    assert (row["status"], row["amount_received"]) == ("succeeded", 1300)


# --- Stripe: localstripe's real signed webhooks ---------------------------------------------


def stripe_api(mesh, path: str, data: dict | None = None) -> dict:
    import urllib.parse

    request = urllib.request.Request(  # noqa: S310 - localstripe of the test's mesh
        f"http://127.0.0.1:{mesh.ports.localstripe}{path}",
        data=urllib.parse.urlencode(data or {}).encode(),
        method="POST",
        headers={"Authorization": "Bearer sk_test_paymesh_dev"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return json.loads(answer.read())


def test_localstripe_webhooks_apply_a_capture_made_at_stripe(mesh, infra):

    merchant = create_merchant(infra, f"stripe-{uuid.uuid4().hex[:6]}")
    route(infra, merchant, "stripe")
    mesh.configure_stripe_webhooks()
    paid = pay(mesh, merchant).body  # automatic capture: its own webhook changes nothing
    intent = pay(mesh, merchant, capture_method="manual").body
    assert intent["status"] == "requires_capture", intent
    stripe_intent = intent_row(infra, intent["id"])["psp_reference"]

    stripe_api(mesh, f"/v1/payment_intents/{stripe_intent}/capture")  # at Stripe, not paymesh

    wait_until(lambda: intent_row(infra, intent["id"])["status"] == "succeeded", timeout=20)
    assert intent_row(infra, intent["id"])["amount_received"] == 1000
    assert [a for a in audits(infra, [intent["id"]]) if a[0] == "webhook"] == [
        ("webhook", "capture", "ok")
    ]
    [(event_type, status, _, _)] = inbox_of_intent(infra, intent["id"])
    assert (event_type, status) == ("payment_intent.succeeded", "applied")
    wait_until(lambda: inbox_of_intent(infra, paid["id"]), timeout=20)
    assert inbox_of_intent(infra, paid["id"])[0][:2] == (
        "payment_intent.succeeded",
        "already_applied",
    )


def test_a_stripe_refund_event_naming_our_refund_is_not_counted_twice(mesh, infra):

    merchant = create_merchant(infra, f"stripe-{uuid.uuid4().hex[:6]}")
    route(infra, merchant, "stripe")
    intent_id = pay(mesh, merchant).body["id"]
    stripe_intent = intent_row(infra, intent_id)["psp_reference"]
    ours = post(mesh, merchant, "/v1/refunds", {"payment_intent": intent_id, "amount": 300}).body
    [(_, _, _, reference)] = refunds_of(infra, intent_id)

    def refund_event(refund_id: str, amount: int, key: str = "") -> dict:
        return event(
            "refund.created",
            {
                "id": refund_id,
                "object": "refund",
                "amount": amount,
                "currency": "usd",
                "payment_intent": stripe_intent,
                "status": "succeeded",
                "metadata": {"paymesh_refund": key} if key else {},
            },
        )

    same = signed(mesh, "stripe", refund_event(reference, 300, ours["id"]))
    at_stripe = signed(mesh, "stripe", refund_event(f"re_{secrets.token_hex(8)}", 200))

    assert same.body["outcome"] == "already_applied"
    assert at_stripe.body["outcome"] == "applied"
    assert intent_row(infra, intent_id)["amount_refunded"] == 500
    assert len(refunds_of(infra, intent_id)) == 2


# --- the gateway's side: internal, and only for the webhook service -------------------------


def test_psp_event_service_is_only_for_the_webhook_service(mesh, merchant):
    import os
    from pathlib import Path

    request = psp_events_pb2.ApplyPspEventRequest(
        psp="sandbox",
        event_id="evt_x",
        psp_reference="ch_x",
        captured=psp_events_pb2.Captured(amount_captured=1),
    )
    keys = Path(os.environ["PAYMESH_KEYS_DIR"])

    def attempt(metadata):
        with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}") as channel:
            stub = psp_events_pb2_grpc.PspEventServiceStub(channel)
            try:
                stub.ApplyPspEvent(request, metadata=metadata, timeout=5)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    def token(service: str):
        return (("x-paymesh-service-token", TokenIssuer(service, keys).token_for("gateway")),)

    assert attempt(tuple(merchant.auth().items())) == grpc.StatusCode.PERMISSION_DENIED
    assert attempt(token("rebill")) == grpc.StatusCode.PERMISSION_DENIED
    assert attempt(token("webhook")) == grpc.StatusCode.OK  # ignored: no such payment


def test_psp_events_apply_several_in_one_call_each_with_its_own_outcome(mesh, infra, merchant):
    """ApplyPspEvents answers each event in order, as ApplyPspEvent would; an invalid event
    is ignored without failing the others, and the call is for the webhook service only.
    The events' intents are looked up together: each answer names its own event's intent."""
    import os
    from pathlib import Path

    keys = Path(os.environ["PAYMESH_KEYS_DIR"])
    unknown = psp_events_pb2.ApplyPspEventRequest(
        psp="sandbox",
        event_id="evt_unknown",
        psp_reference="ch_nobody",
        captured=psp_events_pb2.Captured(amount_captured=1),
    )
    invalid = psp_events_pb2.ApplyPspEventRequest(psp="sandbox", event_id="evt_invalid")

    def call(events, service: str):
        token = TokenIssuer(service, keys).token_for("gateway")
        with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}") as channel:
            stub = psp_events_pb2_grpc.PspEventServiceStub(channel)
            return stub.ApplyPspEvents(
                psp_events_pb2.ApplyPspEventsRequest(events=events),
                metadata=(("x-paymesh-service-token", token),),
                timeout=5,
            )

    intent_id = pay(mesh, merchant, amount=700).body["id"]
    known = psp_events_pb2.ApplyPspEventRequest(
        psp="sandbox",
        event_id=f"evt_{uuid.uuid4().hex}",
        psp_reference=intent_row(infra, intent_id)["psp_reference"],
        captured=psp_events_pb2.Captured(amount_captured=700, currency="usd"),
    )
    single = call([unknown], "webhook").outcomes[0]
    answer = call([unknown, invalid, known, unknown], "webhook")
    assert [(o.outcome, o.reason, o.payment_intent) for o in answer.outcomes] == [
        (single.outcome, single.reason, ""),
        (psp_events_pb2.PSP_EVENT_OUTCOME_IGNORED, "invalid_event", ""),
        (psp_events_pb2.PSP_EVENT_OUTCOME_ALREADY_APPLIED, "", intent_id),
        (single.outcome, single.reason, ""),
    ]
    assert single.outcome == psp_events_pb2.PSP_EVENT_OUTCOME_IGNORED
    with pytest.raises(grpc.RpcError) as refused:
        call([unknown], "rebill")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as too_many:
        call([unknown] * 101, "webhook")
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
