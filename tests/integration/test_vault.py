"""vault_proxy_svc end to end: tokenization over REST through Envoy, validation, fingerprints,
merchant isolation, crypto-shredding, and PSP token provisioning at localstripe for the
gateway's identity only."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paymesh.platform.callers import LIVEMODE_HEADER, MERCHANT_HEADER
from paymesh.platform.service_auth import SERVICE_TOKEN_HEADER, TokenIssuer, init_keys
from tests.support import cards
from tests.support.envelope import assert_error_envelope, violations
from tests.support.http import Response, call
from tests.support.vault import NEXT_YEAR, card_summaries, keys_dir, psp_token, tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_a_card_round_trips_over_rest_masked(mesh, merchant):
    created = tokenize(
        mesh,
        merchant,
        "4242 4242-4242 4242",
        billing_details={"name": "Ada Lovelace", "email": "ada@example.com"},
    )

    assert created.status == 200, created.body
    method = created.body
    assert method["id"].startswith("pm_") and len(method["id"]) == 27
    assert method["card"] == {
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": NEXT_YEAR,
        "fingerprint": method["card"]["fingerprint"],
    }
    assert method["billing_details"]["name"] == "Ada Lovelace"
    assert cards.VISA not in json.dumps(method)
    fetched = call(mesh.url(f"/v1/payment_methods/{method['id']}"), headers=merchant.auth())
    assert fetched.status == 200
    assert fetched.body == method


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        (cards.VISA, "visa"),
        (cards.MASTERCARD, "mastercard"),
        (cards.MASTERCARD_2_SERIES, "mastercard"),
        (cards.DISCOVER, "discover"),
        (cards.JCB, "jcb"),
        (cards.DINERS, "diners"),
        (cards.UNIONPAY, "unionpay"),
        (cards.UNKNOWN_BRAND, "unknown"),
    ],
)
def test_the_brand_is_detected_from_the_number(mesh, merchant, number, brand):
    response = tokenize(mesh, merchant, number)

    assert response.status == 200, response.body
    assert response.body["card"]["brand"] == brand
    assert response.body["card"]["last4"] == number[-4:]


def test_an_amex_takes_a_four_digit_cvc(mesh, merchant):
    response = tokenize(mesh, merchant, cards.AMEX, card={"cvc": "1234"})

    assert response.status == 200
    assert response.body["card"]["brand"] == "amex"


@pytest.mark.parametrize(
    ("card", "field", "reason"),
    [
        ({"number": ""}, "card.number", "missing"),
        ({"number": "4242abcd42424242"}, "card.number", "invalid_number"),
        ({"number": cards.TOO_SHORT}, "card.number", "invalid_number"),
        ({"number": cards.LUHN_FAILURE}, "card.number", "incorrect_number"),
        ({"exp_month": 13}, "card.exp_month", "invalid_expiry_month"),
        ({"exp_month": 0}, "card.exp_month", "invalid_expiry_month"),
        ({"exp_year": 2001}, "card.exp_year", "invalid_expiry_year"),
        ({"exp_year": 0}, "card.exp_year", "invalid_expiry_year"),
        ({"cvc": "12"}, "card.cvc", "invalid_cvc"),
        ({"cvc": "12a"}, "card.cvc", "invalid_cvc"),
        ({"number": cards.AMEX, "cvc": "123"}, "card.cvc", "invalid_cvc"),
    ],
)
def test_each_bad_card_field_is_a_400_naming_the_field_and_reason(
    mesh, merchant, infra, card, field, reason
):
    response = tokenize(mesh, merchant, card=card)

    assert response.status == 400
    assert violations(response) == {field: reason}
    if card.get("number"):
        assert card["number"] not in json.dumps(response.body)


def test_several_bad_fields_are_reported_together(mesh, merchant):
    response = tokenize(
        mesh,
        merchant,
        cards.LUHN_FAILURE,
        card={"exp_month": 13, "cvc": "1"},
        billing_details={"email": "not-an-email", "address": {"country": "France"}},
    )

    assert response.status == 400
    assert violations(response) == {
        "card.number": "incorrect_number",
        "card.exp_month": "invalid_expiry_month",
        "card.cvc": "invalid_cvc",
        "billing_details.email": "invalid_email",
        "billing_details.address.country": "invalid_country",
    }
    assert cards.LUHN_FAILURE not in json.dumps(response.body)


def test_only_cards_can_be_tokenized(mesh, merchant):
    response = tokenize(mesh, merchant, type="sepa_debit")

    assert response.status == 400
    assert violations(response) == {"type": "invalid_type"}


def test_a_rejected_card_writes_nothing(mesh, merchant, infra):
    with psycopg.connect(infra.database_url) as db:
        before = db.execute("SELECT count(*) FROM vault.payment_methods").fetchone()[0]
    assert tokenize(mesh, merchant, cards.LUHN_FAILURE).status == 400
    with psycopg.connect(infra.database_url) as db:
        after = db.execute("SELECT count(*) FROM vault.payment_methods").fetchone()[0]
    assert after == before


def test_fingerprints_match_per_merchant_and_differ_across_merchants(
    mesh, merchant, other_merchant
):
    first = tokenize(mesh, merchant, cards.MASTERCARD).body
    again = tokenize(mesh, merchant, "5555-5555-5555-4444", card={"exp_year": NEXT_YEAR + 2}).body
    elsewhere = tokenize(mesh, other_merchant, cards.MASTERCARD).body
    other_card = tokenize(mesh, merchant, cards.VISA).body

    assert first["id"] != again["id"]
    assert first["card"]["fingerprint"] == again["card"]["fingerprint"]
    assert first["card"]["fingerprint"] != elsewhere["card"]["fingerprint"]
    assert first["card"]["fingerprint"] != other_card["card"]["fingerprint"]


def test_another_merchant_or_mode_cannot_see_or_detach_a_token(mesh, merchant, other_merchant):
    token = tokenize(mesh, merchant).body["id"]

    for headers in (other_merchant.auth(), merchant.auth(live=True)):
        assert call(mesh.url(f"/v1/payment_methods/{token}"), headers=headers).status == 404
        detach = call(mesh.url(f"/v1/payment_methods/{token}/detach"), "POST", headers, {})
        assert detach.status == 404
    assert call(mesh.url(f"/v1/payment_methods/{token}"), headers=merchant.auth()).status == 200


def test_detach_crypto_shreds_the_card(mesh, merchant, infra):
    token = tokenize(mesh, merchant).body["id"]

    detached = call(mesh.url(f"/v1/payment_methods/{token}/detach"), "POST", merchant.auth(), {})

    assert detached.status == 200
    assert detached.body["card"]["last4"] == "4242"
    gone = call(mesh.url(f"/v1/payment_methods/{token}"), headers=merchant.auth())
    assert gone.status == 404
    [info] = [d for d in gone.body["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["reason"] == "payment_method_detached"
    with psycopg.connect(infra.database_url) as db:
        row = db.execute(
            "SELECT wrapped_key, ciphertext, nonce, kek_version, detached_at"
            " FROM vault.payment_methods WHERE id = %s",
            (token,),
        ).fetchone()
    assert row[:4] == (None, None, None, None)
    assert row[4] is not None
    with pytest.raises(grpc.RpcError) as raised:
        psp_token(mesh, merchant, token)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_gateway_gets_a_psp_reference_once_then_from_the_cache(mesh, merchant, infra):
    # Without a CVC nothing is made ahead of the first request (an imported card); the
    # sandbox, unlike localstripe, takes a card without one.
    token = tokenize(mesh, merchant, card={"cvc": ""}).body["id"]

    first = psp_token(mesh, merchant, token, psp="sandbox")
    second = psp_token(mesh, merchant, token, psp="sandbox")

    assert first.psp == "sandbox"
    assert first.psp_reference.startswith("card_")
    assert not first.cached
    assert second.cached
    assert second.psp_reference == first.psp_reference
    with psycopg.connect(infra.database_url) as db:
        audit = db.execute(
            "SELECT actor, action, result, reason FROM vault.vault_audit"
            " WHERE payment_method = %s ORDER BY id",
            (token,),
        ).fetchall()
    assert [(a[1], a[2]) for a in audit] == [
        ("tokenize", "ok"),
        ("decrypt", "ok"),
        ("provision", "ok"),
    ]
    assert audit[1][0] == "service:gateway"
    assert audit[1][3] == "test"


def test_a_card_tokenized_with_its_cvc_is_made_at_every_psp_before_any_charge(
    mesh, merchant, infra
):
    token = tokenize(mesh, merchant).body["id"]

    def provisioned() -> list[tuple] | None:
        with psycopg.connect(infra.database_url) as db:
            rows = db.execute(
                "SELECT actor, result, details->>'psp', details->>'with_cvc' FROM vault.vault_audit"
                " WHERE payment_method = %s AND action = 'provision' ORDER BY 3",
                (token,),
            ).fetchall()
        return rows if len(rows) == 2 else None

    # In the background, after the tokenization answered; each with the CVC, never decrypted.
    assert wait_until(provisioned, timeout=10) == [
        ("worker:provision", "ok", "sandbox", "true"),
        ("worker:provision", "ok", "stripe", "true"),
    ]
    at_stripe = psp_token(mesh, merchant, token)
    at_sandbox = psp_token(mesh, merchant, token, psp="sandbox")
    assert at_stripe.cached and at_sandbox.cached
    card = json.load(
        urllib.request.urlopen(  # noqa: S310 - localstripe on loopback
            urllib.request.Request(
                f"http://127.0.0.1:{mesh.ports.localstripe}/v1/payment_methods/"
                f"{at_stripe.psp_reference}",
                headers={"Authorization": "Bearer sk_test_paymesh_dev"},
            ),
            timeout=5,
        )
    )
    assert card["card"]["last4"] == "4242"
    with psycopg.connect(infra.database_url) as db:
        [decrypted] = db.execute(
            "SELECT count(*) FROM vault.vault_audit WHERE payment_method = %s"
            " AND action = 'decrypt'",
            (token,),
        ).fetchone()
    assert decrypted == 0


def _forged_token() -> str:
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    now = int(time.time())
    claims = {"iss": "gateway", "aud": "vault", "iat": now, "exp": now + 60}
    return jwt.encode(claims, key, algorithm="EdDSA")


def _expired_gateway_token() -> str:
    key = (keys_dir() / "gateway.key").read_bytes()
    now = int(time.time())
    claims = {"iss": "gateway", "aud": "vault", "iat": now - 600, "exp": now - 300}
    return jwt.encode(claims, key, algorithm="EdDSA")


@pytest.mark.parametrize(
    ("caller", "code"),
    [
        ("nobody", grpc.StatusCode.PERMISSION_DENIED),
        ("merchant key", grpc.StatusCode.PERMISSION_DENIED),
        ("rebill", grpc.StatusCode.PERMISSION_DENIED),
        ("forged", grpc.StatusCode.UNAUTHENTICATED),
        ("expired", grpc.StatusCode.UNAUTHENTICATED),
        ("wrong audience", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_only_the_gateway_identity_may_get_psp_tokens(mesh, merchant, caller, code):
    token = tokenize(mesh, merchant).body["id"]
    tokens = {
        "rebill": TokenIssuer("rebill", keys_dir()).token_for("vault"),
        "forged": _forged_token(),
        "expired": _expired_gateway_token(),
        "wrong audience": TokenIssuer("gateway", keys_dir()).token_for("webhook"),
    }
    metadata = [(MERCHANT_HEADER, merchant.id), (LIVEMODE_HEADER, "false")]
    if caller == "merchant key":
        metadata.append(("authorization", f"Bearer {merchant.secret_key}"))
    elif caller in tokens:
        metadata.append((SERVICE_TOKEN_HEADER, tokens[caller]))

    with pytest.raises(grpc.RpcError) as raised:
        psp_token(mesh, merchant, token, metadata=tuple(metadata))

    assert raised.value.code() == code


def test_card_summaries_are_masked_for_the_gateway_and_never_decrypt(
    mesh, merchant, other_merchant, infra
):
    mine = tokenize(mesh, merchant).body["id"]
    theirs = tokenize(mesh, other_merchant, number=cards.MASTERCARD).body["id"]
    # Unreadable card data: a summary that decrypted anything would fail.
    with psycopg.connect(infra.database_url) as db:
        db.execute(
            "UPDATE vault.payment_methods SET ciphertext = 'x'::bytea, wrapped_key = 'x'::bytea"
            " WHERE id = %s",
            (mine,),
        )

    answer = card_summaries(mesh, [mine, "pm_" + "0" * 24, theirs])

    found = {card.payment_method: card for card in answer.cards}
    assert set(found) == {mine, theirs}
    assert (found[mine].brand, found[mine].last4) == ("visa", "4242")
    assert (found[mine].exp_month, found[mine].exp_year) == (12, NEXT_YEAR)
    assert found[mine].fingerprint
    assert (found[theirs].brand, found[theirs].last4) == ("mastercard", cards.MASTERCARD[-4:])
    assert cards.VISA not in str(answer) and cards.MASTERCARD not in str(answer)
    with psycopg.connect(infra.database_url) as db:
        actions = db.execute(
            "SELECT action FROM vault.vault_audit WHERE payment_method = ANY(%s)",
            ([mine, theirs],),
        ).fetchall()
    # (Provisioning ahead, with the CVC, may have run meanwhile: it decrypts nothing either.)
    assert "decrypt" not in {action for (action,) in actions}
    assert ("tokenize",) in actions


@pytest.mark.parametrize(
    ("caller", "code"),
    [
        ("nobody", grpc.StatusCode.PERMISSION_DENIED),
        ("merchant key", grpc.StatusCode.PERMISSION_DENIED),
        ("rebill", grpc.StatusCode.PERMISSION_DENIED),
        ("backoffice", grpc.StatusCode.PERMISSION_DENIED),
        ("forged", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_only_the_gateway_identity_may_get_card_summaries(mesh, merchant, caller, code):
    token = tokenize(mesh, merchant).body["id"]
    tokens = {
        "rebill": TokenIssuer("rebill", keys_dir()).token_for("vault"),
        "forged": _forged_token(),
    }
    metadata: list[tuple[str, str]] = []
    if caller == "merchant key":
        metadata.append(("authorization", f"Bearer {merchant.secret_key}"))
    elif caller == "backoffice":
        init_keys(keys_dir(), ["backoffice"])
        metadata.append(
            (SERVICE_TOKEN_HEADER, TokenIssuer("backoffice", keys_dir()).token_for("vault"))
        )
    elif caller in tokens:
        metadata.append((SERVICE_TOKEN_HEADER, tokens[caller]))

    with pytest.raises(grpc.RpcError) as raised:
        card_summaries(mesh, [token], metadata=tuple(metadata))

    assert raised.value.code() == code


def test_card_summaries_refuse_an_empty_or_overlong_list_naming_the_field(mesh):
    for tokens in ([], ["pm_" + str(n) for n in range(101)]):
        with pytest.raises(grpc.RpcError) as raised:
            card_summaries(mesh, tokens)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "payment_methods" in raised.value.details()


def test_no_envoy_route_reaches_the_internal_rpc(mesh, merchant):
    for path in (
        "/paymesh.vault.v1.VaultInternalService/GetPspToken",
        "/v1/payment_methods/pm_x/psp_token",
    ):
        response = call(mesh.url(path), "POST", merchant.auth(), {})
        assert response.status == 404


def test_an_unsupported_psp_is_invalid(mesh, merchant):
    token = tokenize(mesh, merchant).body["id"]

    with pytest.raises(grpc.RpcError) as raised:
        psp_token(mesh, merchant, token, psp="acme-pay")

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_audit_table_refuses_update_and_delete(mesh, merchant, infra):
    tokenize(mesh, merchant)
    for statement in (
        "UPDATE vault.vault_audit SET result = 'forged'",
        "DELETE FROM vault.vault_audit",
        "TRUNCATE vault.vault_audit",
    ):
        with psycopg.connect(infra.database_url) as db, pytest.raises(psycopg.Error) as raised:
            db.execute(statement)
        assert "append-only" in str(raised.value)


@pytest.mark.parametrize(
    "body",
    [
        '{"card": {"number": 4000000000000002, "exp_month": 12}}',  # a number, not a string
        '{"card": {"number": "4000000000000002", "exp_month": "twelve"}}',
        '{"card": {"number": "4000000000000002"',  # truncated JSON
    ],
)
def test_a_body_envoy_cannot_transcode_is_a_400_that_echoes_nothing(mesh, merchant, body):
    request = urllib.request.Request(
        mesh.url("/v1/payment_methods"),
        data=body.encode(),
        method="POST",
        headers={**merchant.auth(), "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - the mesh on loopback

    text = raised.value.read().decode()
    assert raised.value.code == 400
    assert cards.VISA_DECLINE not in text
    assert_error_envelope(Response(400, {"content-type": "application/json"}, json.loads(text)))
