"""The REST edge as an attacker tries it (issue 8): bad input is a 400 naming the field and
writes nothing, a typo never moves money, limits answer 413/431, 401 comes before anything
else, every error is the one envelope, and no card number is echoed or logged."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import urllib.parse
import uuid

import psycopg
import pytest

from tests.support import cards
from tests.support.envelope import assert_error_envelope
from tests.support.http import Response, _response
from tests.support.pan import pans_in
from tests.support.payments import pay, post
from tests.support.vault import tokenize
from tests.support.waiting import wait_for_text

pytestmark = pytest.mark.integration


def send(mesh, method: str, path: str, body: bytes | str | None = None, headers=None):
    """One raw HTTP request: the bytes exactly as given, which urllib would not allow."""
    connection = http.client.HTTPConnection("127.0.0.1", mesh.ports.envoy, timeout=10)
    try:
        payload = body.encode() if isinstance(body, str) else body
        all_headers = {"content-type": "application/json", **(headers or {})}
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        return _response(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def intents_of(infra, merchant) -> int:
    with psycopg.connect(infra.database_url) as db:
        return db.execute(
            "SELECT count(*) FROM gateway.payment_intents WHERE merchant_id = %s", (merchant.id,)
        ).fetchone()[0]


def fields_at_fault(response: Response) -> dict[str, str]:
    envelope = assert_error_envelope(response)
    [bad] = [d for d in envelope["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    return {v["field"]: v["reason"] for v in bad["field_violations"]}


def reason(response: Response) -> str:
    envelope = assert_error_envelope(response)
    [info] = [d for d in envelope["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return info["reason"]


NEW = '{"amount": 5000, "currency": "usd", '


@pytest.mark.parametrize(
    "body, field",
    [
        (NEW + '"description": "a\\u0000b"}', "description"),
        (NEW + '"metadata": {"k": "\\u0000"}}', "metadata.k"),
        (NEW + '"metadata": {"a": {"b": 1}}}', "metadata.a"),
        (NEW + '"payment_method": "pm_' + "a" * 60 + '"}', "payment_method"),
        (NEW + '"description": "\\ud800"}', "description"),
        (NEW + '"description": "' + "d" * 100_000 + '"}', "description"),
        (NEW + '"capture_metod": "manual", "confirm": true}', "capture_metod"),
        (NEW + '"confirm": "yes"}', "confirm"),
        (NEW + '"confirm": 1}', "confirm"),
        (NEW + '"confirm": null}', "confirm"),
        ('{"amount": "19a9", "currency": "usd"}', "amount"),
        ('{"amount": "-5", "currency": "usd"}', "amount"),
        ('{"amount": "", "currency": "usd"}', "amount"),
        ('{"amount": " 5000", "currency": "usd"}', "amount"),
        ('{"amount": "5e3", "currency": "usd"}', "amount"),
        ('{"amount": "99999999999999999999", "currency": "usd"}', "amount"),
        ('{"amount": 50.5, "currency": "usd"}', "amount"),
        ('{"amount": 99999999999999999999, "currency": "usd"}', "amount"),
        (NEW + '"captureMethod": "manual"}', "captureMethod"),
        (NEW + '"currency": "eur"}', "currency"),
        ("[1, 2]", "body"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(mesh, infra, merchant, body, field):
    before = intents_of(infra, merchant)

    response = send(mesh, "POST", "/v1/payment_intents", body, merchant.auth())

    assert response.status == 400, response.body
    assert field in fields_at_fault(response)
    assert intents_of(infra, merchant) == before


@pytest.mark.parametrize("amount", ["1999", 1999])
def test_an_amount_is_taken_as_a_number_or_as_the_string_of_digits_answers_print(
    mesh, merchant, amount
):
    """Answers write int64 amounts as strings (the proto3 JSON mapping): a merchant may send
    back what it was given."""
    body = json.dumps({"amount": amount, "currency": "usd", "metadata": {"order_id": "1999"}})

    response = send(mesh, "POST", "/v1/payment_intents", body, merchant.auth())

    assert response.status == 200, response.body
    assert response.body["amount"] == "1999"
    paid = pay(mesh, merchant, amount=1999).body
    refund = json.dumps({"payment_intent": paid["id"], "amount": amount})
    refunded = send(mesh, "POST", "/v1/refunds", refund, merchant.auth())
    assert refunded.status == 200, refunded.body
    assert refunded.body["amount"] == "1999"


@pytest.mark.parametrize(
    "path", ["/v1/payment_intents/pi_abc%00def", "/v1/payment_intents/pi_%FF%FE"]
)
def test_an_id_that_is_not_text_is_a_400_naming_it(mesh, merchant, path):
    response = send(mesh, "GET", path, headers=merchant.auth())

    assert response.status == 400
    assert fields_at_fault(response) == {"id": "invalid_characters"}


def test_a_typo_in_a_capture_captures_nothing(mesh, merchant):
    intent = pay(mesh, merchant, capture_method="manual").body

    response = send(
        mesh,
        "POST",
        f"/v1/payment_intents/{intent['id']}/capture",
        '{"amount_to_captur": 1000}',
        merchant.auth(),
    )

    assert response.status == 400
    assert fields_at_fault(response) == {"amount_to_captur": "unknown_parameter"}
    assert response.body["message"] == "Received unknown parameter: amount_to_captur"
    now = send(mesh, "GET", f"/v1/payment_intents/{intent['id']}", headers=merchant.auth()).body
    assert now["status"] == "requires_capture"
    assert now["amount_received"] == "0"


def test_unknown_query_parameters_are_refused_too(mesh, merchant):
    response = send(mesh, "GET", "/v1/payment_intents?limit=2&limt=3", headers=merchant.auth())

    assert response.status == 400
    assert fields_at_fault(response) == {"limt": "unknown_parameter"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/payment_intents",
        "/v1/disputes",
        "/v1/subscriptions",
        "/v1/subscriptions/sub_missing/rebills",
        "/v1/webhook_endpoints",
        "/v1/events",
    ],
)
@pytest.mark.parametrize("limit", ["0", "101", "-1"])
def test_a_page_size_outside_1_to_100_is_a_400_naming_limit(mesh, merchant, path, limit):
    """`limit=0` was read as unset (proto3 cannot tell them apart) and answered 10 items."""
    response = send(mesh, "GET", f"{path}?limit={limit}", headers=merchant.auth())

    assert response.status == 400, response.body
    assert fields_at_fault(response) == {"limit": "invalid_limit"}


def send_oversized(mesh, headers, size: int) -> Response:
    """POSTs `size` bytes the way a careful client does: reading the answer while it writes,
    since Envoy answers 413 and closes before the body is all sent."""
    with socket.create_connection(("127.0.0.1", mesh.ports.envoy), timeout=10) as conn:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        conn.sendall(
            f"POST /v1/payment_intents HTTP/1.1\r\nhost: paymesh\r\n{head}"
            f"content-type: application/json\r\ncontent-length: {size}\r\n\r\n".encode()
        )

        def write_body():
            with contextlib.suppress(OSError):
                for _ in range(size // 65536):
                    conn.sendall(b" " * 65536)

        writer = threading.Thread(target=write_body, daemon=True)
        writer.start()
        response = http.client.HTTPResponse(conn)
        response.begin()
        return _response(response.status, dict(response.getheaders()), response.read())


def test_a_body_over_the_limit_is_413_and_headers_over_it_431(mesh, merchant):
    big_body = send_oversized(mesh, merchant.auth(), 5_000_000)
    big_header = send(
        mesh,
        "GET",
        "/v1/payment_intents",
        headers={**merchant.auth(), "x-request-id": "r" * 10_000},
    )

    assert big_body.status == 413
    assert reason(big_body) == "body_too_large"
    assert big_header.status == 431
    assert reason(big_header) == "headers_too_large"


def test_every_error_is_the_envelope_with_the_request_id(mesh, merchant):
    request_id = f"req-{uuid.uuid4()}"
    headers = {**merchant.auth(), "x-request-id": request_id}
    replies = {
        "bad json": send(mesh, "POST", "/v1/payment_intents", '{"amount": ', headers),
        "unknown route": send(mesh, "GET", "/v1/nothing_here", headers=headers),
        "wrong method": send(mesh, "DELETE", "/v1/payment_intents", headers=headers),
        "service 404": send(mesh, "GET", "/v1/payment_intents/pi_missing", headers=headers),
        "service 400": send(mesh, "POST", "/v1/payment_intents", '{"amount": 0}', headers),
    }

    statuses = {name: reply.status for name, reply in replies.items()}
    assert statuses == {
        "bad json": 400,
        "unknown route": 404,
        "wrong method": 405,
        "service 404": 404,
        "service 400": 400,
    }
    for name, reply in replies.items():
        envelope = assert_error_envelope(reply)
        [info] = [d for d in envelope["details"] if d["@type"].endswith("RequestInfo")]
        assert info["request_id"] == request_id, name
    assert replies["wrong method"].headers["allow"] == "GET, POST"


def test_authentication_comes_before_anything_else(mesh):
    unknown_id = send(mesh, "POST", "/v1/payment_intents/xyz/confirm", "{}")
    bad_key = send(
        mesh,
        "POST",
        "/v1/payment_intents/xyz/confirm",
        '{"bogus": 1}',
        {"authorization": "Bearer sk_test_nope"},
    )

    assert unknown_id.status == 401
    assert reason(unknown_id) == "missing_api_key"
    assert bad_key.status in (400, 401)  # the edge refuses the field before any key lookup
    assert (
        send(
            mesh,
            "POST",
            "/v1/payment_intents/xyz/confirm",
            "{}",
            {"authorization": "Bearer sk_test_nope"},
        ).status
        == 401
    )


def test_a_refused_create_writes_nothing(mesh, infra, merchant, other_merchant):
    theirs = tokenize(mesh, other_merchant).body["id"]
    before = intents_of(infra, merchant)

    for payment_method in ("pm_doesnotexist000000000000", theirs):
        body = {"amount": 500, "currency": "usd", "confirm": True, "payment_method": payment_method}
        response = post(mesh, merchant, "/v1/payment_intents", body)
        assert response.status == 400, response.body
        assert fields_at_fault(response) == {"payment_method": "resource_missing"}

    assert intents_of(infra, merchant) == before


def test_a_card_number_is_neither_echoed_nor_logged_and_request_ids_stay_whole(mesh, merchant):
    searchable = str(uuid.uuid4())
    by_path = send(mesh, "GET", f"/v1/payment_methods/{cards.VISA}", headers=merchant.auth())
    by_id = send(
        mesh,
        "GET",
        "/v1/payment_intents/pi_missing",
        headers={
            **merchant.auth(),
            "x-request-id": cards.VISA_DECLINE,
            "user-agent": f"shop/1.0 card={cards.MASTERCARD}",
        },
    )
    plain = send(
        mesh,
        "GET",
        "/v1/payment_intents/pi_missing",
        headers={**merchant.auth(), "x-request-id": searchable},
    )

    assert by_path.status in (400, 404)
    assert cards.VISA not in json.dumps(by_path.body)
    assert by_id.headers["x-request-id"] == "*" * 12 + cards.VISA_DECLINE[-4:]
    assert cards.VISA_DECLINE not in json.dumps(by_id.body)
    assert plain.headers["x-request-id"] == searchable
    assert wait_for_text(mesh.log_dir / "envoy.log", searchable, timeout=15)
    assert wait_for_text(mesh.log_dir / "gateway.log", searchable, timeout=5)
    envoy_log = (mesh.log_dir / "envoy.log").read_text()
    gateway_log = (mesh.log_dir / "gateway.log").read_text()
    assert cards.VISA not in envoy_log
    assert cards.VISA_DECLINE not in envoy_log + gateway_log
    assert cards.MASTERCARD not in envoy_log


def test_headers_just_under_the_limit_reach_the_service(mesh, merchant):
    """Envoy adds headers of its own: the services take more metadata than the edge lets in,
    or a request just under 8 KiB would come back as gRPC's RESOURCE_EXHAUSTED (429). gRPC's
    defaults refuse only some of the calls between 8 and 16 KiB, at random: so, many calls."""
    headers = {**merchant.auth(), "x-shop-note": "n" * 7_600}

    responses = [
        send(mesh, "GET", "/v1/payment_intents/pi_missing", headers=headers) for _ in range(60)
    ]

    assert {response.status for response in responses} == {404}
    assert {reason(response) for response in responses} == {"resource_missing"}


def test_a_card_number_in_other_digits_or_percent_encoded_is_masked_too(mesh, merchant):
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in cards.MASTERCARD)
    encoded = "".join(f"%{ord(d):02X}" for d in cards.AMEX)
    marker = str(uuid.uuid4())
    for path in (
        "/v1/payment_intents/" + urllib.parse.quote(fullwidth),
        "/v1/payment_intents/" + encoded,
    ):
        response = send(mesh, "GET", path, headers={**merchant.auth(), "x-request-id": marker})
        assert response.status in (400, 404), response.body

    assert wait_for_text(mesh.log_dir / "envoy.log", marker, timeout=15)
    lines = [
        line for line in (mesh.log_dir / "envoy.log").read_text().splitlines() if marker in line
    ]
    assert len(lines) == 2
    assert not any(pans_in(line) for line in lines), lines


def test_header_names_that_grpc_refuses_are_dropped_not_a_500(mesh, merchant):
    response = send(
        mesh, "GET", "/v1/payment_intents/pi_missing", headers={**merchant.auth(), "~o4ma": "m#"}
    )

    assert response.status == 404
    assert reason(response) == "resource_missing"


def test_successes_that_envoy_answers_keep_their_bodies(mesh):
    document = send(mesh, "GET", "/openapi.json")
    health = send(mesh, "GET", "/healthz")

    assert document.status == 200
    assert document.body["openapi"].startswith("3.")
    assert health.status == 200
    assert "code" not in (health.body or {})


def test_a_card_number_sent_as_idempotency_key_is_not_stored(mesh, infra, merchant):
    body = {"amount": 100, "currency": "usd"}
    first = post_with_key(mesh, merchant, body, cards.DISCOVER)
    again = post_with_key(mesh, merchant, body, cards.DISCOVER)

    assert first.status == again.status == 200
    assert again.body["id"] == first.body["id"]
    with psycopg.connect(infra.database_url) as db:
        keys = [row[0] for row in db.execute("SELECT key FROM gateway.idempotency_keys")]
    assert keys
    assert not any(cards.DISCOVER in key for key in keys)


def post_with_key(mesh, merchant, body, key):
    headers = {**merchant.auth(), "idempotency-key": key}
    return send(mesh, "POST", "/v1/payment_intents", json.dumps(body), headers)


def test_a_card_number_used_as_a_field_name_is_not_echoed(mesh, merchant):
    body = json.dumps(
        {"amount": 100, "currency": "usd", "metadata": {cards.VISA: 1}, cards.AMEX: 1}
    )

    response = send(mesh, "POST", "/v1/payment_intents", body, merchant.auth())

    assert response.status == 400
    assert set(fields_at_fault(response)) == {"metadata.************4242", "***********0005"}
    assert not pans_in(json.dumps(response.body))


@pytest.mark.parametrize(
    "method, path, name",
    [
        ("GET", "/v1/payment_intents?limit=1&limit=2", "limit"),
        ("GET", "/v1/payment_intents?limit=1&limit=1", "limit"),
        ("GET", "/v1/payment_intents?limit=1&%6Cimit=2", "limit"),
        ("GET", "/v1/subscriptions?status=active&status=canceled", "status"),
        ("GET", "/v1/subscriptions/sub_missing/rebills?offset=0&limit=2&offset=1", "offset"),
        ("GET", "/v1/webhook_endpoints?starting_after=we_a&starting_after=we_b", "starting_after"),
        ("GET", "/v1/events?type=a.b&limit=3&type=c.d", "type"),
        (
            "POST",
            "/v1/payment_intents/pi_missing/capture?amount_to_capture=1&amount_to_capture=2",
            "amount_to_capture",
        ),
    ],
)
def test_a_query_parameter_given_twice_is_a_400_naming_it(mesh, merchant, method, path, name):
    response = send(mesh, method, path, headers=merchant.auth())

    assert response.status == 400, response.body
    assert reason(response) == "duplicate_parameter"
    assert fields_at_fault(response) == {name: "duplicate_parameter"}
    assert response.body["message"] == f"{name} is given twice"


def test_a_field_given_in_the_query_and_the_body_is_a_400_naming_it(mesh, merchant):
    response = send(
        mesh,
        "POST",
        "/v1/payment_intents/pi_missing/capture?amount_to_capture=1",
        '{"amount_to_capture": 2}',
        merchant.auth(),
    )

    assert response.status == 400, response.body
    assert fields_at_fault(response) == {"amount_to_capture": "duplicate_parameter"}
