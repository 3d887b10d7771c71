"""Who may open which back-office page: each role's pages answer 200, the others 403; without
a session every page redirects to /login; the nav lists only what the role may open."""

from __future__ import annotations

import pytest

from tests.support.backoffice import console

FINANCE_PAGES = ["/payments", "/payments/pi_test0001", "/reconciliation", "/disputes", "/exports"]
OPS_PAGES = ["/dead-letters", "/merchants", "/system"]
SHARED_PAGES = ["/subscriptions", "/subscriptions/sub_test1"]
ADMIN_PAGES = ["/operators"]
EVERY_PAGE = FINANCE_PAGES + OPS_PAGES + SHARED_PAGES + ADMIN_PAGES
MAY_OPEN = {
    "finance": set(FINANCE_PAGES + SHARED_PAGES),
    "ops": set(OPS_PAGES + SHARED_PAGES),
    "admin": set(EVERY_PAGE),
}


@pytest.mark.parametrize("path", EVERY_PAGE)
def test_a_visitor_without_a_session_is_sent_to_sign_in(path):
    answer = console().client.get(path, follow_redirects=False)

    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"


@pytest.mark.parametrize("role", ["finance", "ops", "admin"])
def test_each_role_opens_its_pages_and_gets_403_on_the_others(role):
    app = console()
    app.sign_in(role)

    for path in EVERY_PAGE:
        answer = app.client.get(path, follow_redirects=False)
        expected = 200 if path in MAY_OPEN[role] else 403
        assert answer.status_code == expected, (role, path, answer.text[:300])
        if expected == 403:
            assert "Forbidden" in answer.text


@pytest.mark.parametrize(
    ("role", "shown", "hidden"),
    [
        ("finance", ["/payments", "/exports"], ["/dead-letters", "/system", "/operators"]),
        ("ops", ["/dead-letters", "/merchants", "/system"], ["/payments", "/operators"]),
        ("admin", ["/payments", "/system", "/operators"], []),
    ],
)
def test_the_nav_shows_only_the_roles_pages(role, shown, hidden):
    app = console()
    app.sign_in(role)
    html = app.client.get("/subscriptions").text
    nav = html[html.index('data-testid="nav"') : html.index("</nav>")]

    for path in shown:
        assert f'href="{path}"' in nav
    for path in hidden:
        assert f'href="{path}"' not in nav


def test_an_operator_is_sent_home_after_signing_in():
    app = console()
    email = app.add_operator("ops")
    token = app.csrf_from("/login")

    answer = app.client.post(
        "/login",
        data={"email": email, "password": "correct horse battery staple", "csrf_token": token},
        follow_redirects=False,
    )

    assert answer.headers["location"] == "/subscriptions"
