"""The back office for real: started by its mesh (devmesh's option), against PostgreSQL (its
own schema and role) and the services, with operators made by `paymesh operators create`.
An operator signs in over HTTP, loads the payments and the system pages, and the sign-ins
(a failed one too) land in the chained operator audit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.support.backoffice import BackofficeMesh, backoffice_mesh, sign_in_over_http

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def console(infra, tmp_path_factory) -> Iterator[BackofficeMesh]:
    with backoffice_mesh(tmp_path_factory.mktemp("backoffice")) as running:
        yield running


def test_a_finance_operator_signs_in_and_loads_the_payments_page(console):
    email, password = console.operator("finance")
    with httpx.Client(base_url=console.url, timeout=30) as http:
        assert http.get("/payments", follow_redirects=False).headers["location"] == "/login"

        signed_in = sign_in_over_http(http, email, password)
        payments = http.get("/payments")

    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/payments"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert payments.status_code == 200
    assert "<h1>Payments</h1>" in payments.text
    # The table, or (before the gateway implements BackOfficeService) the call's panel.
    assert 'data-testid="payments-table"' in payments.text or (
        'data-testid="unavailable"' in payments.text and "SearchPayments" in payments.text
    )
    assert "Traceback" not in payments.text


def test_an_ops_operator_sees_each_services_health_and_the_rebill_leader(console):
    email, password = console.operator("ops")
    with httpx.Client(base_url=console.url, timeout=30) as http:
        sign_in_over_http(http, email, password)
        system = http.get("/system")
        payments = http.get("/payments")

    assert system.status_code == 200
    health = system.text[system.text.index('data-testid="health"') :]
    health = health[: health.index("</table>")]
    for service in ("gateway", "vault", "rebill", "webhook"):
        assert f'<td>{service}</td><td class="ok">SERVING</td>' in health
    assert "Metrics unreachable" not in system.text
    assert "Leader: rebill" in system.text
    assert payments.status_code == 403


def test_sign_ins_and_failures_are_in_the_chained_operator_audit(console):
    email, password = console.operator("admin")
    with httpx.Client(base_url=console.url, timeout=30) as http:
        refused = sign_in_over_http(http, email, "not the password")
        accepted = sign_in_over_http(http, email, password)

    assert refused.status_code == 401 and accepted.status_code == 303
    with psycopg.connect(console.infra.database_url) as db:
        rows = db.execute(
            "SELECT actor, action, result, details->>'operator' FROM backoffice.operator_audit"
            " WHERE object_id = %s ORDER BY id",
            (email,),
        ).fetchall()
        broken = db.execute(
            "SELECT count(*) FROM backoffice.operator_audit a"
            " WHERE hash <> backoffice.operator_audit_digest(prev_hash, a)"
        ).fetchone()
    assert rows == [
        ("operator", "operator.create", "created", "cli"),
        ("operator", "signin", "failed", email),
        ("operator", "signin", "succeeded", email),
    ]
    assert broken == (0,)
