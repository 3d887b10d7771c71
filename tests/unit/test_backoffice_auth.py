"""Signing in to the back office: argon2 hashes, session cookies (HttpOnly, SameSite=Strict,
Secure), idle and absolute expiry, CSRF on every POST (sign-in included), and every attempt
audited."""

from __future__ import annotations

import asyncio

import pytest

from backoffice.operators import InvalidOperator, create_operator
from backoffice.passwords import hash_password, verify_password
from backoffice.sessions import SESSION_COOKIE, digest
from backoffice.store import OperatorExists
from tests.support.backoffice import PASSWORD, console


def test_passwords_are_stored_as_argon2id_hashes_that_verify_only_the_password():
    hashed = hash_password(PASSWORD)

    assert hashed.startswith("$argon2id$")
    assert PASSWORD not in hashed
    assert hash_password(PASSWORD) != hashed  # salted
    assert verify_password(hashed, PASSWORD)
    assert not verify_password(hashed, PASSWORD + "!")
    assert not verify_password(None, PASSWORD)  # unknown operator
    assert not verify_password("not a hash", PASSWORD)


def test_an_operator_gets_a_generated_one_time_password_unless_given_one():
    app = console()
    operator, password = asyncio.run(create_operator(app.store, "Ana@Example.com", "finance"))

    assert operator.email == "ana@example.com"
    assert len(password) >= 16
    assert verify_password(operator.password_hash, password)
    with pytest.raises(OperatorExists):
        asyncio.run(create_operator(app.store, "ana@example.com", "ops"))
    with pytest.raises(InvalidOperator, match="role"):
        asyncio.run(create_operator(app.store, "bo@example.com", "root"))
    with pytest.raises(InvalidOperator, match="email"):
        asyncio.run(create_operator(app.store, "not-an-email", "ops"))
    with pytest.raises(InvalidOperator, match="password"):
        asyncio.run(create_operator(app.store, "cy@example.com", "ops", "short"))


def test_signing_in_sets_a_strict_http_only_secure_session_cookie_whose_digest_is_stored():
    app = console(cookie_secure=True)
    email = app.add_operator("finance")
    token = app.csrf_from("/login")

    answer = app.client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )

    cookie = next(
        h for h in answer.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= flags
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert list(app.store.sessions) == [digest(session_id)]  # never the cookie's value
    assert app.store.audit_log[-1].action == "signin"
    assert app.store.audit_log[-1].result == "succeeded"


def test_a_failed_sign_in_is_audited_and_opens_no_session():
    app = console()
    email = app.add_operator("finance")
    token = app.csrf_from("/login")

    answer = app.client.post(
        "/login",
        data={"email": email, "password": "wrong password!", "csrf_token": token},
        follow_redirects=False,
    )

    assert answer.status_code == 401
    assert "Wrong email or password" in answer.text
    assert app.store.sessions == {}
    failure = app.store.audit_log[-1]
    assert (failure.operator, failure.action, failure.result) == (email, "signin", "failed")


def test_a_sign_in_without_the_login_forms_csrf_token_is_refused_and_opens_no_session():
    app = console()
    email = app.add_operator("finance")
    app.client.get("/login")  # the pre-session cookie, but the form's token is not sent
    audited = len(app.store.audit_log)

    answer = app.client.post(
        "/login", data={"email": email, "password": PASSWORD}, follow_redirects=False
    )

    assert answer.status_code == 403
    assert app.store.sessions == {}
    assert len(app.store.audit_log) == audited


def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing():
    app = console()
    app.sign_in("finance")
    audited = len(app.store.audit_log)
    calls = len(app.mesh.calls)

    for token in (None, "forged"):
        data = {"amount": "100", "reason": "customer asked", "idempotency_key": "k1"}
        if token:
            data["csrf_token"] = token
        answer = app.client.post("/payments/pi_test0001/refund", data=data)
        assert answer.status_code == 403
        assert "CSRF" in answer.text
    answer = app.client.post(
        "/reconciliation/rcm_test1/resolve", data={"resolution": "ignored", "note": "fine"}
    )
    assert answer.status_code == 403

    assert app.mesh.refunds == {}
    assert app.mesh.mismatch_list[0].state == "open"
    assert len(app.mesh.calls) == calls
    assert len(app.store.audit_log) == audited


def test_a_session_ends_after_its_idle_time():
    app = console(idle_seconds=600, max_seconds=3600)
    app.sign_in("finance")
    assert app.client.get("/payments", follow_redirects=False).status_code == 200

    app.clock.advance(601)

    answer = app.client.get("/payments", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert app.store.sessions == {}


def test_a_session_ends_at_its_absolute_lifetime_however_busy():
    app = console(idle_seconds=600, max_seconds=3600)
    app.sign_in("finance")

    for _ in range(7):  # a request every 9 minutes keeps it from idling out
        app.clock.advance(540)
        answer = app.client.get("/payments", follow_redirects=False)
    assert answer.status_code == 303  # 63 minutes after signing in


def test_signing_out_ends_the_session():
    app = console()
    app.sign_in("ops")
    token = app.csrf_from("/system")

    answer = app.client.post("/logout", data={"csrf_token": token}, follow_redirects=False)

    assert answer.headers["location"] == "/login"
    assert app.store.sessions == {}
    assert app.client.get("/system", follow_redirects=False).status_code == 303
    assert app.store.audit_log[-1].action == "signout"
