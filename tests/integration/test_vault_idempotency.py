"""Idempotency keys on tokenize and detach, through Envoy like a merchant: one key, one token;
a replay answers with the payment method as it is now; another request under the key is a
409; the key's row holds no card data."""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest

from paymesh.platform.callers import Merchant
from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.idempotency.store import Claim
from tests.support import cards
from tests.support.http import call
from tests.support.vault import NEXT_YEAR, tokenize
from vault_proxy_svc.models import AuditEntry, PaymentMethod
from vault_proxy_svc.postgres_card_store import PostgresCardStore

pytestmark = pytest.mark.integration


def _key() -> str:
    return "idem-" + secrets.token_hex(8)


def _tokenize(mesh, merchant, key: str, number: str = cards.VISA, **fields):
    card = {"number": number, "exp_month": 12, "exp_year": NEXT_YEAR, "cvc": "123"}
    return call(
        mesh.url("/v1/payment_methods"),
        "POST",
        {**merchant.auth(), "Idempotency-Key": key},
        {"card": card, **fields},
    )


def _detach(mesh, merchant, token: str, key: str | None):
    headers = {**merchant.auth(), **({"Idempotency-Key": key} if key else {})}
    return call(mesh.url(f"/v1/payment_methods/{token}/detach"), "POST", headers, {})


def _count_cards(infra, merchant) -> int:
    with psycopg.connect(infra.database_url) as db:
        return db.execute(
            "SELECT count(*) FROM vault.payment_methods WHERE merchant_id = %s", (merchant.id,)
        ).fetchone()[0]


def _reason(response) -> str:
    [info] = [d for d in response.body["details"] if d["@type"].endswith("ErrorInfo")]
    return info["reason"]


def test_the_same_key_twice_makes_one_token(mesh, merchant, infra):
    key = _key()
    before = _count_cards(infra, merchant)

    first = _tokenize(mesh, merchant, key, billing_details={"name": "Ada"})
    again = _tokenize(mesh, merchant, key, billing_details={"name": "Ada"})

    assert first.status == 200, first.body
    assert "idempotent-replayed" not in first.headers
    assert again.status == 200, again.body
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body == first.body
    assert _count_cards(infra, merchant) == before + 1
    with psycopg.connect(infra.database_url) as db:
        written = db.execute(
            "SELECT (SELECT count(*) FROM vault.vault_audit WHERE payment_method = %(id)s"
            " AND action = 'tokenize'),"
            " (SELECT count(*) FROM vault.outbox WHERE aggregate_id = %(id)s)",
            {"id": first.body["id"]},
        ).fetchone()
    # One tokenization's audit row and one event, written with the card (the card's creation
    # at the PSPs that follows is audited on its own).
    assert written == (1, 1)


def test_the_same_key_with_another_card_is_a_409_and_makes_nothing(mesh, merchant, infra):
    key = _key()
    assert _tokenize(mesh, merchant, key).status == 200
    before = _count_cards(infra, merchant)

    other = _tokenize(mesh, merchant, key, cards.MASTERCARD)

    assert other.status == 409
    assert _reason(other) == "idempotency_key_reused"
    assert cards.MASTERCARD not in str(other.body)
    assert _count_cards(infra, merchant) == before


def test_keys_are_per_merchant_and_mode(mesh, merchant, other_merchant):
    key = _key()
    mine = _tokenize(mesh, merchant, key)
    theirs = _tokenize(mesh, other_merchant, key, cards.MASTERCARD)

    assert mine.status == theirs.status == 200
    assert mine.body["id"] != theirs.body["id"]


def test_the_same_key_at_once_makes_one_token(mesh, merchant, infra):
    key = _key()
    before = _count_cards(infra, merchant)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _tokenize(mesh, merchant, key), range(8)))

    assert {a.status for a in answers} <= {200, 409}
    ok = [a for a in answers if a.status == 200]
    assert ok, [a.body for a in answers]
    assert len({a.body["id"] for a in ok}) == 1
    assert all(_reason(a) == "idempotency_key_in_use" for a in answers if a.status == 409)
    assert _count_cards(infra, merchant) == before + 1


def test_a_refused_card_is_replayed_as_the_same_error(mesh, merchant, infra):
    key = _key()
    first = _tokenize(mesh, merchant, key, cards.LUHN_FAILURE)
    again = _tokenize(mesh, merchant, key, cards.LUHN_FAILURE)

    assert first.status == again.status == 400
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body["details"][0] == first.body["details"][0]


def test_a_replayed_tokenize_shows_the_payment_method_as_it_is_now(mesh, merchant):
    key = _key()
    token = _tokenize(mesh, merchant, key).body["id"]
    assert _detach(mesh, merchant, token, None).status == 200

    again = _tokenize(mesh, merchant, key)

    assert again.status == 200
    assert again.body["id"] == token


def test_detach_with_a_key_is_replayed(mesh, merchant, infra):
    token = tokenize(mesh, merchant).body["id"]
    key = _key()

    first = _detach(mesh, merchant, token, key)
    again = _detach(mesh, merchant, token, key)
    without_key = _detach(mesh, merchant, token, None)

    assert first.status == 200, first.body
    assert again.status == 200, again.body
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body == first.body
    assert without_key.status == 404
    with psycopg.connect(infra.database_url) as db:
        detaches = db.execute(
            "SELECT count(*) FROM vault.vault_audit WHERE payment_method = %s"
            " AND action = 'detach'",
            (token,),
        ).fetchone()[0]
    assert detaches == 1


def test_a_detach_key_reused_for_another_card_is_a_409(mesh, merchant):
    key = _key()
    first, second = (tokenize(mesh, merchant).body["id"] for _ in range(2))
    assert _detach(mesh, merchant, first, key).status == 200

    other = _detach(mesh, merchant, second, key)

    assert other.status == 409
    assert _reason(other) == "idempotency_key_reused"
    assert call(mesh.url(f"/v1/payment_methods/{second}"), headers=merchant.auth()).status == 200


def test_an_overlong_key_is_a_400(mesh, merchant):
    response = _tokenize(mesh, merchant, "k" * 256)

    assert response.status == 400
    [bad] = [d for d in response.body["details"] if d["@type"].endswith("BadRequest")]
    assert bad["field_violations"][0]["field"] == "idempotency-key"


def _newest_key_row(infra, merchant) -> str:
    """The merchant's newest key row, as text (keys are stored as HMACs: not searchable)."""
    with psycopg.connect(infra.database_url) as db:
        return db.execute(
            "SELECT k::text FROM vault.idempotency_keys k WHERE merchant_id = %s"
            " ORDER BY created_at DESC LIMIT 1",
            (merchant.id,),
        ).fetchone()[0]


def test_the_key_table_holds_no_card_data_even_when_the_key_is_a_card_number(mesh, merchant, infra):
    key = cards.VISA_DECLINE  # a merchant may send anything as a key
    first = _tokenize(mesh, merchant, key, cards.AMEX)  # an amex CVC has 4 digits: an error
    row = _newest_key_row(infra, merchant)
    again = _tokenize(mesh, merchant, key, cards.AMEX)

    assert first.status == again.status == 400
    assert again.headers["idempotent-replayed"] == "true"
    assert cards.AMEX not in row
    assert cards.VISA_DECLINE not in row


def _newest_key_as(infra, merchant, state: str, age_seconds: float) -> None:
    """The merchant's newest key put back to `state`, taken `age_seconds` ago: a request
    still running, or one that died (the vault alone can compute a key's row)."""
    with psycopg.connect(infra.database_url) as db:
        db.execute(
            "UPDATE vault.idempotency_keys SET state = %s, object_id = NULL,"
            " locked_at = now() - make_interval(secs => %s)"
            " WHERE (merchant_id, livemode, key) = (SELECT merchant_id, livemode, key"
            " FROM vault.idempotency_keys WHERE merchant_id = %s"
            " ORDER BY created_at DESC LIMIT 1)",
            (state, age_seconds, merchant.id),
        )


def test_a_key_still_running_is_a_409_in_use_and_a_dead_one_runs_again(mesh, merchant, infra):
    running, dead = _key(), _key()
    assert _tokenize(mesh, merchant, running).status == 200
    _newest_key_as(infra, merchant, "running", age_seconds=0)
    assert _tokenize(mesh, merchant, dead).status == 200
    _newest_key_as(infra, merchant, "running", age_seconds=120)
    before = _count_cards(infra, merchant)

    in_use = _tokenize(mesh, merchant, running)  # waits for the other request, then gives up
    rerun = _tokenize(mesh, merchant, dead)

    assert in_use.status == 409
    assert _reason(in_use) == "idempotency_key_in_use"
    assert rerun.status == 200, rerun.body
    assert "idempotent-replayed" not in rerun.headers
    assert _count_cards(infra, merchant) == before + 1


def test_a_request_that_lost_its_key_writes_nothing(infra, merchant):
    """The card, its audit row and event are written only while the request holds its key:
    one that was taken over (its holder looked dead) cannot make a second token."""
    owner = Merchant(merchant.id, False)
    key = _key()
    token = "pm_lost" + secrets.token_hex(8)
    with psycopg.connect(infra.database_url) as db:
        db.execute(
            "INSERT INTO vault.idempotency_keys (merchant_id, livemode, key, request_hash, state)"
            " VALUES (%s, false, %s, 'x', 'running')",
            (merchant.id, key),
        )
    stolen = Claim(owner, key, datetime(2000, 1, 1, tzinfo=UTC))  # not the row's locked_at
    card = PaymentMethod(
        id=token,
        merchant_id=merchant.id,
        livemode=False,
        brand="visa",
        last4="4242",
        exp_month=12,
        exp_year=NEXT_YEAR,
        fingerprint="f",
        sealed=None,
    )
    audit = AuditEntry(actor="test", action="tokenize", result="ok")

    async def attempt():
        engine = create_engine(infra.database_url)
        direct = DirectSql(engine)
        try:
            store = PostgresCardStore(engine, direct)
            return await store.insert_tokenized(card, audit, key=stolen)
        finally:
            await direct.close()
            await engine.dispose()

    assert asyncio.run(attempt()) is None
    with psycopg.connect(infra.database_url) as db:
        written = db.execute(
            "SELECT (SELECT count(*) FROM vault.payment_methods WHERE id = %(t)s),"
            " (SELECT count(*) FROM vault.vault_audit WHERE payment_method = %(t)s),"
            " (SELECT count(*) FROM vault.outbox WHERE aggregate_id = %(t)s),"
            " (SELECT state FROM vault.idempotency_keys WHERE key = %(k)s)",
            {"t": token, "k": key},
        ).fetchone()
    assert written == (0, 0, 0, "running")
