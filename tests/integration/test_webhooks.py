"""Merchant webhooks end to end: payments through Envoy make domain events, the outbox relay
publishes them to RabbitMQ, webhook_svc takes them and posts them to a real HTTP receiver on
loopback, which verifies each delivery with the `standardwebhooks` library as a merchant
would. Faults come from the receiver (errors, 429 with Retry-After, 410, hangs), the broker
(the same event twice) and the service (killed with SIGKILL mid-delivery)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pika
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from paymesh.platform.service_auth import SERVICE_TOKEN_HEADER, TokenIssuer
from paymesh.webhook.v1 import event_stream_pb2, event_stream_pb2_grpc
from tests.support.http import call
from tests.support.mesh import ROOT
from tests.support.payments import pay, post
from tests.support.receiver import Script
from tests.support.waiting import wait_until
from tests.support.webhooks import SCHEDULE, Hooks, verified
from webhook_svc.domain.rules import EVENT_TYPES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hooks(webhook_hooks) -> Hooks:
    """A mesh apart (database, vhost, webhook_svc admitting loopback, the retry schedule
    compressed) and one receiver, shared with test_event_objects."""
    return webhook_hooks


def verified_v1a(public_key: str, request) -> dict:
    """The delivery's body, verified as the README shows a merchant (`standardwebhooks` 1.3.0
    cannot verify v1a): its Python block that defines `verify_v1a`, run as it is written,
    with the endpoint's public key where it says `whpk_…`."""
    [snippet] = [
        block
        for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
        if "def verify_v1a" in block
    ]
    scope = {"request_body": request.body, "request_headers": request.headers}
    exec(snippet.replace('"whpk_…"', repr(public_key)), scope)  # noqa: S102 - the README's
    return scope["event"]


# --- delivered, signed, verifiable -------------------------------------------------------


def test_payment_events_reach_the_endpoint_signed_as_standard_webhooks_verifies_them(hooks):
    merchant = hooks.merchant("signed")
    endpoint = hooks.endpoint(
        merchant, "/signed", ["payment_intent.created", "payment_intent.succeeded"]
    )
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
    intent = pay(hooks.mesh, merchant).body

    requests = hooks.deliveries("/signed", 2)
    bodies = [verified(endpoint["secret"], r) for r in requests]
    assert [b["type"] for b in bodies] == ["payment_intent.created", "payment_intent.succeeded"]
    for request, body in zip(requests, bodies, strict=True):
        assert request.headers["webhook-id"] == body["id"]
        assert body["data"]["object"]["id"] == intent["id"]
        assert "merchant_id" not in body["data"]["object"]
    assert bodies[0]["sequence"] < bodies[1]["sequence"]
    assert bodies[1]["data"]["object"]["status"] == "succeeded"
    assert bodies[1]["data"]["object"]["amount"] == "1000"  # as GET writes it

    # A tampered body or another secret does not verify.
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 24).decode()).verify(
            requests[0].body, requests[0].headers
        )
    # Reads never show the secret again.
    read = hooks.get(merchant, f"/v1/webhook_endpoints/{endpoint['id']}").body
    assert read["secret"] == "" and read["url"] == endpoint["url"]

    listed = hooks.get(merchant, "/v1/events?type=payment_intent.succeeded").body
    assert [e["id"] for e in listed["data"]] == [bodies[1]["id"]]
    event = wait_until(
        lambda: (e := hooks.get(merchant, f"/v1/events/{bodies[1]['id']}").body)["attempts"] and e
    )
    assert event["attempts"][0]["status_code"] == 200
    assert event["attempts"][0]["webhook_endpoint"] == endpoint["id"]


def test_an_asymmetric_endpoint_is_verified_with_its_public_key_alone(hooks):
    merchant = hooks.merchant("ed25519")
    endpoint = hooks.endpoint(
        merchant, "/v1a", ["payment_intent.succeeded"], signature_scheme="v1a"
    )
    assert endpoint["secret"] == "" and endpoint["public_key"].startswith("whpk_")
    assert (
        hooks.get(merchant, f"/v1/webhook_endpoints/{endpoint['id']}").body["public_key"]
        == (endpoint["public_key"])
    )
    intent = pay(hooks.mesh, merchant).body
    [request] = hooks.deliveries("/v1a", 1)
    assert verified_v1a(endpoint["public_key"], request)["data"]["object"]["id"] == intent["id"]


def test_a_backlog_after_the_service_was_stopped_reaches_the_endpoint_in_each_objects_order(
    hooks,
):
    """webhook_svc is frozen (SIGSTOP) while 12 of 20 payments run and thawed after the
    burst: what it had claimed before is stale, what came meanwhile is due at once, more of it
    than one claim takes. Each object's events still reach the endpoint in sequence order
    (before, a later event of an object went while the earlier one, claimed before the stop,
    was put back unsent)."""
    merchant = hooks.merchant("backlog")
    hooks.receiver.scripts["/backlog"] = Script(statuses=[200], hang_seconds=0.5)
    endpoint = hooks.endpoint(merchant, "/backlog")
    webhook_svc = hooks.mesh.processes["webhook"]

    def payment(_):
        intent = pay(hooks.mesh, merchant, capture_method="manual").body
        captured = post(hooks.mesh, merchant, f"/v1/payment_intents/{intent['id']}/capture")
        assert captured.status == 200, captured.body
        return intent["id"]

    intents: list[str] = []
    # Stopped longer than a claimed delivery may wait to start (its lease less its timeout),
    # then longer than its lease.
    for pause in (5.5, 9.0):
        with ThreadPoolExecutor(max_workers=4) as pool:
            running = [pool.submit(payment, n) for n in range(20)]
            wait_until(lambda fs=running: sum(f.done() for f in fs) >= 8, timeout=60)
            os.kill(webhook_svc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                intents += [f.result(timeout=60) for f in running]
                time.sleep(max(0.0, stopped + pause - time.monotonic()))
            finally:
                os.kill(webhook_svc.pid, signal.SIGCONT)

    # What the endpoint must get of the intents: every event of theirs that webhooks carry.
    expected = hooks.faults.scalar(
        "SELECT count(*) FROM gateway.outbox WHERE aggregate_id = ANY(%s) AND event_type = ANY(%s)",
        (intents, sorted(EVENT_TYPES)),
    )
    assert expected == 40 * 3  # created, requires_capture, succeeded

    def received() -> dict[str, list[tuple[int, str]]]:
        """Each object's events as they reached the endpoint, sent again ones included (one
        whose answer came after the thaw had timed out, or whose lease had lapsed)."""
        sent: dict[str, list[tuple[int, str]]] = {}
        for request in hooks.receiver.at("/backlog"):
            body = json.loads(request.body)
            sent.setdefault(body["data"]["object"]["id"], []).append(
                (body["sequence"], body["type"])
            )
        return sent

    sent = wait_until(
        lambda: (
            (s := received()) and sum(len(set(s.get(i, []))) for i in intents) == expected and s
        ),
        timeout=90,
    )

    def window_closed() -> bool:
        """Every delivery settled (none is sent again) and every request the endpoint got
        has its attempt recorded (no send, a stale one sent again included, is under way)."""
        recorded = hooks.faults.scalar(
            "SELECT count(*) FROM webhook.delivery_attempts WHERE endpoint_id = %s",
            (endpoint["id"],),
        )
        unsettled = hooks.faults.scalar(
            "SELECT count(*) FROM webhook.deliveries WHERE endpoint_id = %s"
            " AND (status <> 'succeeded' OR leased_until IS NOT NULL)",
            (endpoint["id"],),
        )
        return unsettled == 0 and recorded >= len(hooks.receiver.at("/backlog"))

    wait_until(window_closed, timeout=30)
    sent = received()
    assert set(intents) <= set(sent)
    out_of_order = {obj: seen for obj, seen in sent.items() if seen != sorted(seen)}
    assert out_of_order == {}, f"{len(out_of_order)} of {len(sent)} objects: {out_of_order}"


def test_a_domain_event_the_broker_delivers_twice_is_delivered_once(hooks):
    merchant = hooks.merchant("twice")
    hooks.endpoint(merchant, "/twice", ["refund.created"])
    message = {
        "id": "evt_dupTwiceOnlyOnce0000000001",
        "type": "refund.created",
        "created": datetime.now(UTC).isoformat(),
        "data": {
            "object_type": "refund",
            "object_id": "re_twice",
            "merchant_id": merchant.id,
            "livemode": False,
            "amount": 5,
            "currency": "usd",
            "status": "pending",
        },
        "sequence": 1,
    }
    duplicates = 'webhook_events_received_total{result="duplicate"}'
    duplicates_before = hooks.metric(duplicates)
    connection = pika.BlockingConnection(pika.URLParameters(hooks.faults.infra.amqp_url))
    try:
        channel = connection.channel()
        for _ in range(3):
            channel.basic_publish("paymesh.events", "refund.created", json.dumps(message))
    finally:
        connection.close()
    # The window closes when both later copies were taken in (as duplicates: no broker
    # redelivery happens elsewhere in this module) and the delivery's outcome is recorded
    # (settled, its lease cleared: no lapse can send it again). The consumer may still be
    # taking in the previous test's backlog, hence the long wait (CI: 10 s were not enough).
    wait_until(lambda: hooks.metric(duplicates) >= duplicates_before + 2, timeout=45)
    settled = (
        "SELECT status, attempts, leased_until IS NULL FROM webhook.deliveries WHERE event_id = %s"
    )
    wait_until(
        lambda: hooks.faults.rows(settled, (message["id"],)) == [("succeeded", 1, True)],
        timeout=30,
    )
    assert hooks.metric(duplicates) == duplicates_before + 2
    assert hooks.faults.rows(
        "SELECT attempt, status_code FROM webhook.delivery_attempts WHERE event_id = %s",
        (message["id"],),
    ) == [(1, 200)]
    assert [r.headers["webhook-id"] for r in hooks.receiver.at("/twice")] == [message["id"]]


# --- retries, Retry-After, 410, dead letters ---------------------------------------------


def test_a_failing_endpoint_is_retried_with_growing_gaps_then_dead_lettered(hooks):
    merchant = hooks.merchant("failing")
    hooks.receiver.scripts["/failing"] = Script(statuses=[500])
    hooks.endpoint(merchant, "/failing", ["payment_intent.succeeded"])
    dead_before = hooks.metric("webhook_dead_letters_total")
    pay(hooks.mesh, merchant)

    requests = hooks.deliveries("/failing", len(SCHEDULE))
    ids = {r.headers["webhook-id"] for r in requests}
    assert len(ids) == 1  # every retry is the same event, under the same webhook-id
    gaps = [b.at - a.at for a, b in zip(requests, requests[1:], strict=False)]
    for gap, planned in zip(gaps, SCHEDULE[1:], strict=False):
        assert planned * 0.85 <= gap <= planned + 1.0, gaps
    wait_until(lambda: hooks.metric("webhook_dead_letters_total") >= dead_before + 1)
    event_id = ids.pop()
    # Given up: once the delivery is recorded dead after its last attempt, nothing sends it
    # again.
    delivery = (
        "SELECT status, attempts, leased_until IS NULL FROM webhook.deliveries WHERE event_id = %s"
    )
    wait_until(lambda: hooks.faults.rows(delivery, (event_id,)) == [("dead", len(SCHEDULE), True)])
    assert len(hooks.receiver.at("/failing")) == len(SCHEDULE)
    event = hooks.get(merchant, f"/v1/events/{event_id}").body
    assert [a["attempt"] for a in event["attempts"]] == [1, 2, 3, 4]
    assert {a["status_code"] for a in event["attempts"]} == {500}


def test_an_endpoint_that_keeps_failing_opens_its_circuit_and_spares_the_others(hooks):
    merchant = hooks.merchant("breaker")
    hooks.receiver.scripts["/breaker"] = Script(statuses=[500])
    broken = hooks.endpoint(merchant, "/breaker", ["payment_intent.succeeded"])
    hooks.endpoint(merchant, "/breaker-healthy", ["payment_intent.succeeded"])
    deferred_before = hooks.metric('webhook_deliveries_total{result="deferred"}')
    for _ in range(3):
        pay(hooks.mesh, merchant)
    hooks.deliveries("/breaker-healthy", 3)  # the healthy endpoint gets everything at once
    wait_until(
        lambda: hooks.metric(f'webhook_endpoint_circuit_state{{endpoint="{broken["id"]}"}}') == 2
    )
    # While open, due deliveries wait without being sent or spending an attempt.
    wait_until(
        lambda: hooks.metric('webhook_deliveries_total{result="deferred"}') > deferred_before
    )
    assert len(hooks.receiver.at("/breaker")) < 3 * len(SCHEDULE)


def test_retry_after_on_429_is_honoured(hooks):
    merchant = hooks.merchant("throttled")
    hooks.receiver.scripts["/throttled"] = Script(statuses=[429, 200], headers={"Retry-After": "2"})
    hooks.endpoint(merchant, "/throttled", ["payment_intent.succeeded"])
    pay(hooks.mesh, merchant)
    first, second = hooks.deliveries("/throttled", 2)
    assert second.at - first.at >= 1.9  # not the schedule's 0.4 s


def test_410_gone_disables_the_endpoint_at_once(hooks):
    merchant = hooks.merchant("gone")
    hooks.receiver.scripts["/gone"] = Script(statuses=[410])
    endpoint = hooks.endpoint(merchant, "/gone", ["payment_intent.succeeded"])
    pay(hooks.mesh, merchant)
    hooks.deliveries("/gone", 1)
    read = wait_until(
        lambda: (
            (e := hooks.get(merchant, f"/v1/webhook_endpoints/{endpoint['id']}").body)["status"]
            == "disabled"
            and e
        )
    )
    assert read["disabled_reason"] == "gone"
    later = pay(hooks.mesh, merchant).body
    # Once webhook_svc took the later event in, its deliveries were fanned out (in the same
    # statement): the disabled endpoint got none, so nothing will ever be sent it.
    wait_until(
        lambda: hooks.faults.scalar(
            "SELECT count(*) FROM webhook.events WHERE object_id = %s AND type = %s",
            (later["id"], "payment_intent.succeeded"),
        )
    )
    assert hooks.faults.rows(
        "SELECT status FROM webhook.deliveries WHERE endpoint_id = %s", (endpoint["id"],)
    ) == [("dead",)]
    assert len(hooks.receiver.at("/gone")) == 1


def test_an_endpoint_failing_for_five_days_is_disabled_and_the_merchant_told(hooks):
    merchant = hooks.merchant("five-days")
    hooks.receiver.scripts["/five-days"] = Script(statuses=[500])
    failing = hooks.endpoint(merchant, "/five-days", ["payment_intent.succeeded"])
    hooks.endpoint(merchant, "/five-days-watch", ["webhook_endpoint.disabled"])
    pay(hooks.mesh, merchant)
    hooks.deliveries("/five-days", 1)
    wait_until(
        lambda: hooks.faults.scalar(
            "SELECT failing_since FROM webhook.webhook_endpoints WHERE id = %s", (failing["id"],)
        )
    )
    # Five days and a bit pass for the endpoint: its first failure is moved back in time.
    hooks.faults.db.execute(
        "UPDATE webhook.webhook_endpoints SET failing_since = now() - interval '5 days 1 hour'"
        " WHERE id = %s AND failing_since IS NOT NULL",
        (failing["id"],),
    )
    pay(hooks.mesh, merchant)
    [told] = hooks.deliveries("/five-days-watch", 1)
    body = json.loads(told.body)
    assert body["type"] == "webhook_endpoint.disabled"
    assert body["data"]["object"]["id"] == failing["id"]
    assert body["data"]["object"]["disabled_reason"] == "failing"
    read = hooks.get(merchant, f"/v1/webhook_endpoints/{failing['id']}").body
    assert (read["status"], read["disabled_reason"]) == ("disabled", "failing")


def test_redeliver_sends_the_same_event_again_under_the_same_webhook_id(hooks):
    merchant = hooks.merchant("again")
    endpoint = hooks.endpoint(merchant, "/again", ["payment_intent.succeeded"])
    pay(hooks.mesh, merchant)
    [first] = hooks.deliveries("/again", 1)
    event_id = first.headers["webhook-id"]
    answer = post(hooks.mesh, merchant, f"/v1/events/{event_id}/redeliver")
    assert answer.status == 200 and answer.body["scheduled"] == 1
    _, second = hooks.deliveries("/again", 2)
    assert second.headers["webhook-id"] == event_id and second.body == first.body
    assert verified(endpoint["secret"], second)["id"] == event_id


def test_recover_resends_in_order_what_the_endpoint_missed(hooks):
    merchant = hooks.merchant("recover")
    hooks.receiver.scripts["/recover"] = Script(statuses=[503])
    lifecycle = [
        "payment_intent.created",
        "payment_intent.requires_capture",
        "payment_intent.succeeded",
    ]
    endpoint = hooks.endpoint(merchant, "/recover", lifecycle)
    since = datetime.now(UTC) - timedelta(seconds=5)
    intent = pay(hooks.mesh, merchant, capture_method="manual").body
    assert post(hooks.mesh, merchant, f"/v1/payment_intents/{intent['id']}/capture").status == 200
    # Every attempt failed: the object's events one after the other, each once the one before
    # it was dead-lettered, the later ones slowed by the endpoint's open circuit.
    hooks.deliveries("/recover", 3 * len(SCHEDULE), timeout=90)
    given_up = "SELECT count(*) FROM webhook.deliveries WHERE endpoint_id = %s AND status = 'dead'"
    wait_until(lambda: hooks.faults.scalar(given_up, (endpoint["id"],)) == 3, timeout=15)
    # A replica is sending the object's second event as the merchant asks to recover: its
    # lease holds that delivery back, and the events after it must wait for it. (The lease
    # outlasts the endpoint's open circuit, as a real one does: the first event, deferred by
    # the circuit, is sent before the lease ends.)
    in_flight = hooks.faults.rows(
        "UPDATE webhook.deliveries d SET status = 'pending', next_attempt_at = now(),"
        " leased_until = now() + interval '5 seconds', lease_token = 'another_replica'"
        " FROM webhook.events ev WHERE ev.id = d.event_id AND d.endpoint_id = %s"
        " AND ev.type = 'payment_intent.requires_capture' RETURNING d.id",
        (endpoint["id"],),
    )
    assert len(in_flight) == 1
    hooks.receiver.scripts["/recover"] = Script(statuses=[200])

    def recover():
        return post(
            hooks.mesh,
            merchant,
            f"/v1/webhook_endpoints/{endpoint['id']}/recover",
            {"since": since.isoformat().replace("+00:00", "Z")},
        )

    answer = recover()
    assert answer.status == 200 and answer.body["scheduled"] == 3
    recovered = [json.loads(r.body) for r in hooks.deliveries("/recover", 3 * len(SCHEDULE) + 3)]
    recovered = recovered[-3:]
    assert [b["type"] for b in recovered] == lifecycle  # one object's events, in its order
    assert [b["sequence"] for b in recovered] == sorted(b["sequence"] for b in recovered)
    # Received now: a second recover has nothing to send.
    last = f"/v1/events/{recovered[-1]['id']}"
    wait_until(lambda: hooks.get(merchant, last).body["attempts"][-1]["status_code"] == 200)
    assert recover().body["scheduled"] == 0
    too_old = post(
        hooks.mesh,
        merchant,
        f"/v1/webhook_endpoints/{endpoint['id']}/recover",
        {"since": "2020-01-01T00:00:00Z"},
    )
    assert too_old.status == 400


def test_a_rolled_secret_signs_beside_the_new_one(hooks):
    merchant = hooks.merchant("rolled")
    endpoint = hooks.endpoint(merchant, "/rolled", ["payment_intent.succeeded"])
    rolled = post(hooks.mesh, merchant, f"/v1/webhook_endpoints/{endpoint['id']}/roll_secret")
    assert rolled.status == 200
    new_secret = rolled.body["secret"]
    assert new_secret.startswith("whsec_") and new_secret != endpoint["secret"]
    assert rolled.body["previous_secret_expires_at"]
    pay(hooks.mesh, merchant)
    [request] = hooks.deliveries("/rolled", 1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verified(new_secret, request) == verified(endpoint["secret"], request)


# --- endpoints: input, ownership, idempotency --------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "url", "invalid_url"),
        ({"url": "not a url"}, "url", "invalid_url"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "url", "invalid_url"),
        ({"url": "http://10.0.0.1/x"}, "url", "invalid_url"),
        ({"url": "http://169.254.169.254/latest"}, "url", "invalid_url"),
        ({"enabled_events": []}, "enabled_events", "missing"),
        (
            {"enabled_events": ["payment_intent.exploded"]},
            "enabled_events[0]",
            "invalid_event_type",
        ),
        ({"signature_scheme": "v2"}, "signature_scheme", "invalid_value"),
        ({"description": "x" * 1001}, "description", "too_long"),
    ],
)
def test_bad_endpoint_input_is_refused_naming_the_field_and_writes_nothing(
    hooks, change, field, reason
):
    merchant = hooks.merchant("bad-input")
    body = {"url": hooks.receiver.url("/bad"), "enabled_events": ["*"], **change}
    answer = post(hooks.mesh, merchant, "/v1/webhook_endpoints", body)
    assert answer.status == 400, answer.body
    [bad_request] = [d for d in answer.body["details"] if d["@type"].endswith("BadRequest")]
    assert {v["field"]: v["reason"] for v in bad_request["field_violations"]} == {field: reason}
    assert hooks.get(merchant, "/v1/webhook_endpoints").body["data"] == []


def test_endpoints_are_the_merchants_own_and_a_retried_creation_makes_one(hooks):
    merchant, other = hooks.merchant("owner"), hooks.merchant("intruder")
    body = {"url": hooks.receiver.url("/owned"), "enabled_events": ["*"]}
    first = post(hooks.mesh, merchant, "/v1/webhook_endpoints", body, key="hook-1")
    again = post(hooks.mesh, merchant, "/v1/webhook_endpoints", body, key="hook-1")
    assert again.body["id"] == first.body["id"] and again.body["secret"] == first.body["secret"]
    clash = post(
        hooks.mesh, merchant, "/v1/webhook_endpoints", {**body, "description": "x"}, key="hook-1"
    )
    assert clash.status == 409
    assert len(hooks.get(merchant, "/v1/webhook_endpoints").body["data"]) == 1

    path = f"/v1/webhook_endpoints/{first.body['id']}"
    assert hooks.get(other, path).status == 404
    assert post(hooks.mesh, other, path, {"disabled": True}).status == 404
    assert call(hooks.mesh.url(path), "DELETE", other.auth()).status == 404

    updated = post(hooks.mesh, merchant, path, {"disabled": True, "description": "paused"})
    assert updated.body["status"] == "disabled" and updated.body["disabled_reason"] == "merchant"
    assert call(hooks.mesh.url(path), "DELETE", merchant.auth()).body == {
        "id": first.body["id"],
        "deleted": True,
    }
    assert hooks.get(merchant, path).status == 404


def test_a_creation_retried_after_the_endpoint_changed_is_answered_as_before(hooks):
    """A retry is judged by the request its key came with, not by the endpoint's current
    fields: it answers with the endpoint as it is now."""
    merchant = hooks.merchant("retry-after-update")
    body = {"url": hooks.receiver.url("/changed"), "enabled_events": ["*"]}
    first = post(hooks.mesh, merchant, "/v1/webhook_endpoints", body, key="hook-changed")
    assert first.status == 200, first.body
    path = f"/v1/webhook_endpoints/{first.body['id']}"
    assert post(hooks.mesh, merchant, path, {"description": "renamed"}).status == 200

    again = post(hooks.mesh, merchant, "/v1/webhook_endpoints", body, key="hook-changed")

    assert again.status == 200, again.body
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body["id"] == first.body["id"]
    assert again.body["description"] == "renamed"
    assert len(hooks.get(merchant, "/v1/webhook_endpoints").body["data"]) == 1


def test_a_destination_that_resolves_to_loopback_is_refused_when_loopback_is_not_admitted(
    mesh, merchant
):
    """The session's mesh runs with the production default: no private destinations."""
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]:9/hook"):
        answer = post(
            mesh, merchant, "/v1/webhook_endpoints", {"url": url, "enabled_events": ["*"]}
        )
        assert answer.status == 400, (url, answer.body)
        assert "loopback" in answer.body["details"][-1]["field_violations"][0]["description"]


@pytest.mark.parametrize(
    ("host", "ipv4"),
    [
        ("[2002:7f00:1::]", "127.0.0.1"),  # 6to4
        ("[2002:a9fe:a9fe::]", "169.254.169.254"),
        ("[2002:a00:1::]", "10.0.0.1"),
        ("[64:ff9b::a9fe:a9fe]", "169.254.169.254"),  # NAT64
        ("[::ffff:a9fe:a9fe]", "169.254.169.254"),  # IPv4-mapped
        ("[2001:0:4136:e378:8000:63bf:5601:5601]", "169.254.169.254"),  # Teredo
    ],
)
def test_an_endpoint_whose_ipv6_address_leads_to_a_private_ipv4_is_refused(
    mesh, merchant, host, ipv4
):
    """Under the production default, through the REST edge: 400 naming `url` and the IPv4,
    and no endpoint made."""
    body = {"url": f"http://{host}/hook", "enabled_events": ["*"]}
    answer = post(mesh, merchant, "/v1/webhook_endpoints", body)
    assert answer.status == 400, (host, answer.body)
    [violation] = answer.body["details"][-1]["field_violations"]
    assert violation["field"] == "url" and ipv4 in violation["description"], violation
    listed = call(mesh.url("/v1/webhook_endpoints?limit=100"), "GET", merchant.auth()).body
    assert all(host not in endpoint["url"] for endpoint in listed["data"])


def test_an_endpoint_whose_6to4_address_leads_to_a_public_ipv4_is_accepted(mesh, merchant):
    body = {"url": "http://[2002:808:808::]/hook", "enabled_events": ["payment_method.detached"]}
    answer = post(mesh, merchant, "/v1/webhook_endpoints", body)
    assert answer.status == 200, answer.body
    path = f"/v1/webhook_endpoints/{answer.body['id']}"
    assert call(mesh.url(path), "DELETE", merchant.auth()).body["deleted"] is True


# --- the internal event stream -------------------------------------------------------------


def stream(
    hooks: Hooks, resume_after: str = "", types=(), seconds: float = 3.0, until=None
) -> list:
    """What StreamEvents sends within `seconds`, called as an internal service would; or, with
    `until`, as soon as what it sent so far satisfies `until`."""
    keys = Path(hooks.mesh.env["PAYMESH_KEYS_DIR"])
    token = TokenIssuer("ops", keys).token_for("webhook")
    with grpc.insecure_channel(f"127.0.0.1:{hooks.mesh.ports.grpc['webhook']}") as channel:
        call = event_stream_pb2_grpc.EventStreamServiceStub(channel).StreamEvents(
            event_stream_pb2.StreamEventsRequest(types=list(types), resume_after=resume_after),
            metadata=((SERVICE_TOKEN_HEADER, token),),
            timeout=seconds,
        )
        received = []
        try:
            for message in call:
                received.append(message)
                if until is not None and until(received):
                    call.cancel()
                    break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
        return received


def test_the_event_stream_resumes_after_a_disconnect_without_gap_or_duplicate(hooks):
    merchant = hooks.merchant("streamed")
    for _ in range(3):
        pay(hooks.mesh, merchant)
    wait_until(
        lambda: (
            len(hooks.get(merchant, "/v1/events?type=payment_intent.succeeded").body["data"]) == 3
        )
    )

    def ours_in(messages) -> list:
        return [m for m in messages if m.merchant_id == merchant.id]

    first = stream(
        hooks, types=["payment_intent.succeeded"], seconds=20, until=lambda r: len(ours_in(r)) == 3
    )
    ours = ours_in(first)
    assert len(ours) == 3
    cut = first.index(ours[1])  # the consumer stops after our second event
    for _ in range(2):
        pay(hooks.mesh, merchant)
    wait_until(
        lambda: (
            len(hooks.get(merchant, "/v1/events?type=payment_intent.succeeded").body["data"]) == 5
        )
    )
    rest = stream(
        hooks,
        resume_after=first[cut].resume_token,
        types=["payment_intent.succeeded"],
        seconds=20,
        until=lambda r: len(ours_in(r)) == 3,  # the third of before, the two of after
    )
    seen = [m.event.id for m in first[: cut + 1] + rest]
    assert len(seen) == len(set(seen))  # no duplicate
    assert [m.event.id for m in first[cut + 1 :]] == [m.event.id for m in rest][
        : len(first) - cut - 1
    ]
    listed = hooks.get(merchant, "/v1/events?type=payment_intent.succeeded").body["data"]
    ours_seen = [m.event.id for m in first[: cut + 1] + rest if m.merchant_id == merchant.id]
    assert sorted(ours_seen) == sorted(e["id"] for e in listed)  # no gap
    assert all(m.event.type == "payment_intent.succeeded" for m in rest)


def test_an_event_committed_late_is_streamed_in_its_place_not_skipped(hooks):
    """A transaction that wrote an event earlier but commits later than another must not be
    passed over by a consumer that already saw the later one."""

    def event(connection, event_id):
        connection.execute(
            "INSERT INTO webhook.events (id, merchant_id, livemode, type, object_type,"
            " object_id, sequence, object, created_at)"
            " VALUES (%s, 'acct_late', false, 'refund.created', 'refund', 're_late', 1, '{}',"
            " now())",
            (event_id,),
        )

    database = hooks.faults.infra.database_url
    # The stream read up to now: up to an event of this test's, committed before the others.
    with psycopg.connect(database, autocommit=True) as connection:
        event(connection, "evt_lateStreamedUpToHere0001")
    start = stream(
        hooks, seconds=20, until=lambda r: r[-1].event.id == "evt_lateStreamedUpToHere0001"
    )
    resume = start[-1].resume_token
    with psycopg.connect(database) as slow, psycopg.connect(database, autocommit=True) as quick:
        event(slow, "evt_lateSlowTransaction000001")  # open, not committed
        event(quick, "evt_lateQuickTransaction00001")  # committed at once
        meanwhile = stream(hooks, resume_after=resume, seconds=1.0)
        assert "evt_lateQuickTransaction00001" not in [m.event.id for m in meanwhile]
        slow.commit()
    late_and_quick = {"evt_lateSlowTransaction000001", "evt_lateQuickTransaction00001"}
    after = stream(
        hooks,
        resume_after=resume,
        seconds=20,
        until=lambda r: late_and_quick <= {m.event.id for m in r},
    )
    ids = [m.event.id for m in after]
    assert ids.index("evt_lateSlowTransaction000001") < ids.index("evt_lateQuickTransaction00001")
    # Nothing of this test's comes again (another test's events may still be arriving).
    again = stream(hooks, resume_after=after[-1].resume_token, seconds=1.0)
    assert [m.event.id for m in again if m.merchant_id == "acct_late"] == []


def test_the_event_stream_is_for_services_only(hooks):
    with grpc.insecure_channel(f"127.0.0.1:{hooks.mesh.ports.grpc['webhook']}") as channel:
        call = event_stream_pb2_grpc.EventStreamServiceStub(channel).StreamEvents(
            event_stream_pb2.StreamEventsRequest(), timeout=3
        )
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(call))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- the service killed mid-delivery -----------------------------------------------------


def test_webhook_svc_killed_mid_delivery_sends_the_event_again_with_the_same_id(hooks):
    merchant = hooks.merchant("killed")
    hooks.receiver.scripts["/killed"] = Script(statuses=[200], hang_seconds=0.8)
    endpoint = hooks.endpoint(merchant, "/killed", ["payment_intent.succeeded"])
    pay(hooks.mesh, merchant)
    [first] = hooks.deliveries("/killed", 1)
    process = hooks.mesh.processes["webhook"]
    os.kill(process.pid, signal.SIGKILL)  # while the receiver sits on the request
    process.wait(10)
    hooks.receiver.scripts["/killed"] = Script(statuses=[200])
    hooks.faults.spawn(
        "webhook", [sys.executable, "-m", "webhook_svc"], hooks.mesh.ports.http["webhook"]
    )
    _, second = hooks.deliveries("/killed", 2, timeout=30)  # once its lease lapsed
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert verified(endpoint["secret"], second)["id"] == first.headers["webhook-id"]
