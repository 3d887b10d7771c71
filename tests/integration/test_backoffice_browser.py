"""The back office in a real browser (issue 32): Debian's chromium, driven by Playwright,
against a whole mesh and the back office started on it. Operators sign in as each role, find
a payment a merchant made through Envoy, read its timeline, refund it and watch the refund
reach the sandbox PSP's ledger; resolve a reconciliation mismatch; retry a dead webhook
delivery and see it delivered. A role sees only its pages (403 otherwise), a visitor without
a session is sent to /login, a form posted without its CSRF token is refused, and no page's
HTML holds a card number. Each main screen is saved under build/screenshots/.

One mesh for the module (the shared `webhook_hooks` one: webhook_svc admits the loopback
receiver and retries on a compressed schedule), one back office on it, one browser."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from playwright.sync_api import Browser, Page

from tests.support.backoffice import create_operator, running_backoffice
from tests.support.browser import (
    assert_no_card_numbers,
    fresh_page,
    launched_browser,
    screenshot,
    visit,
)
from tests.support.http import call
from tests.support.mesh import TestMerchant
from tests.support.ops import grpcurl
from tests.support.payments import pay
from tests.support.psp import charges_of, refunds_at_psp, sandbox
from tests.support.rebill import subscribe
from tests.support.receiver import Script
from tests.support.waiting import wait_until
from tests.support.webhooks import SCHEDULE, Hooks

pytestmark = pytest.mark.integration

# What each role may open (issue 32; the shared decisions): every other page is a 403.
PAGES_OF = {
    "finance": {"/payments", "/subscriptions", "/reconciliation", "/disputes", "/exports"},
    "ops": {"/dead-letters", "/merchants", "/system", "/subscriptions"},
    "admin": {
        "/payments",
        "/subscriptions",
        "/reconciliation",
        "/disputes",
        "/exports",
        "/dead-letters",
        "/merchants",
        "/system",
        "/operators",
    },
}
EVERY_PAGE = sorted(PAGES_OF["admin"])
MAIN_SCREENS = [page for page in EVERY_PAGE if page != "/operators"]


@dataclass(frozen=True)
class Operator:
    email: str
    role: str
    password: str


@dataclass(frozen=True)
class Office:
    hooks: Hooks
    url: str
    operators: dict[str, Operator]
    merchant: TestMerchant  # pays through Envoy

    @property
    def mesh(self):
        return self.hooks.mesh

    @property
    def infra(self):
        return self.hooks.faults.infra


@pytest.fixture(scope="module")
def office(webhook_hooks: Hooks, tmp_path_factory) -> Iterator[Office]:
    mesh = webhook_hooks.mesh
    with running_backoffice(mesh) as url:
        operators = {}
        for role in PAGES_OF:
            created = create_operator(mesh.env, f"{role}@backoffice.test", role)
            assert (created["email"], created["role"]) == (f"{role}@backoffice.test", role)
            operators[role] = Operator(created["email"], role, created["password"])
        yield Office(webhook_hooks, url, operators, webhook_hooks.merchant("backoffice-shop"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_browser() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, office: Office) -> Iterator[Page]:
    with fresh_page(browser, office.url) as opened:
        yield opened


def sign_in(page: Page, operator: Operator) -> None:
    """Through the /login form, as a person would; lands on a page other than /login."""
    visit(page, "/login")
    form = page.locator("form:has(input[name=password])")
    form.locator("input[name=email]").fill(operator.email)
    form.locator("input[name=password]").fill(operator.password)
    with page.expect_navigation():
        form.locator("input[name=password]").press("Enter")
    assert "/login" not in page.url, page.inner_text("body")
    assert_no_card_numbers(page)


def text_of(page: Page) -> str:
    """The page's visible text, whitespace folded (for contains checks)."""
    return " ".join(page.inner_text("body").split())


def refused(page: Page, path: str) -> bool:
    response = visit(page, path)
    return response.status == 403 and "403" in text_of(page) or "forbidden" in text_of(page).lower()


def paid_through_envoy(office: Office, amount: int) -> dict:
    intent = pay(office.mesh, office.merchant, amount=amount).body
    assert intent["status"] == "succeeded", intent
    return intent


def audit_rows(office: Office, object_id: str) -> list[tuple[str, str, str, dict]]:
    with psycopg.connect(office.infra.database_url) as db:
        return db.execute(
            "SELECT actor, action, result, details FROM gateway.payment_audit"
            " WHERE object_id = %s ORDER BY id",
            (object_id,),
        ).fetchall()


# --- who may open what -----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["finance", "ops", "admin"])
def test_each_role_signs_in_and_opens_its_pages_and_no_other(page, office, role):
    sign_in(page, office.operators[role])
    screenshot(page, f"home-{role}")
    nav = {link.get_attribute("href") for link in page.locator("nav a").all()}

    for path in EVERY_PAGE:
        response = visit(page, path)
        if path in PAGES_OF[role]:
            assert response.status == 200, (role, path, text_of(page))
            assert path in nav, (role, path, nav)
        else:
            assert response.status == 403, (role, path, response.status)
            assert path not in nav, (role, path, nav)


def test_ops_gets_the_403_page_for_payments_and_finance_for_dead_letters(browser, office):
    with fresh_page(browser, office.url) as ops:
        sign_in(ops, office.operators["ops"])
        assert refused(ops, "/payments")
        assert refused(ops, "/payments/pi_anything")
        screenshot(ops, "forbidden-ops-payments")
    with fresh_page(browser, office.url) as finance:
        sign_in(finance, office.operators["finance"])
        assert refused(finance, "/dead-letters")
        assert refused(finance, "/merchants")


def test_a_visitor_without_a_session_is_sent_to_the_sign_in_page(page, office):
    for path in [*EVERY_PAGE, "/payments/pi_anything"]:
        answer = page.request.get(path, max_redirects=0)
        assert answer.status == 303, (path, answer.status)
        assert answer.headers["location"].endswith("/login"), (path, answer.headers)
    visit(page, "/payments")
    assert page.url.endswith("/login")
    assert page.locator("form input[name=csrf_token]").count() == 1
    screenshot(page, "login")


def test_a_wrong_password_does_not_sign_in(page, office):
    finance = office.operators["finance"]
    sign_in_attempt = Operator(finance.email, finance.role, finance.password + "x")
    visit(page, "/login")
    page.locator("input[name=email]").fill(sign_in_attempt.email)
    page.locator("input[name=password]").fill(sign_in_attempt.password)
    page.locator("input[name=password]").press("Enter")
    page.wait_for_load_state()
    assert page.url.endswith("/login")
    assert page.request.get("/payments", max_redirects=0).status == 303


# --- payments ---------------------------------------------------------------------------------


def test_finance_finds_a_payment_made_through_envoy_and_reads_its_timeline(page, office):
    intent = paid_through_envoy(office, amount=4321)
    sign_in(page, office.operators["finance"])

    for query in (intent["id"], office.merchant.id):
        visit(page, "/payments")
        page.locator("input[name=q]").fill(query)
        with page.expect_navigation():
            page.locator("input[name=q]").press("Enter")
        assert intent["id"] in text_of(page), query
    screenshot(page, "payments-search")

    with page.expect_navigation():
        page.locator(f"a[href='/payments/{intent['id']}']").first.click()
    assert page.url.endswith(f"/payments/{intent['id']}")
    assert_no_card_numbers(page)
    shown = text_of(page)
    rows = audit_rows(office, intent["id"])
    assert rows, "a payment through Envoy has audit rows"
    for actor, action, result, _details in rows:
        assert actor in shown and action in shown and result in shown, (actor, action, result)
    assert re.search(r"chain\W+(verified|verifies|intact)", shown, re.IGNORECASE), shown
    assert "4242" in shown  # the card, masked: its last 4
    [charge] = charges_of(office.mesh, intent["id"])
    assert charge["id"] in shown  # the PSP attempt, by the PSP's reference
    screenshot(page, "payment")


def test_finance_refunds_a_payment_and_the_refund_reaches_the_psp(page, office):
    intent = paid_through_envoy(office, amount=2500)
    [charge] = charges_of(office.mesh, intent["id"])
    finance = office.operators["finance"]
    sign_in(page, finance)
    visit(page, f"/payments/{intent['id']}")

    form = page.locator("form:has(input[name=reason]), form:has(select[name=reason])").first
    reason = form.locator("[name=reason]")
    if reason.evaluate("e => e.tagName") == "SELECT":
        reason.select_option(index=1)
    else:
        reason.fill("customer asked")
    form.locator("input[name=amount]").fill("1000")  # minor units: 10.00 of 25.00
    with page.expect_navigation():
        form.locator("button, input[type=submit]").first.click()
    assert_no_card_numbers(page)

    wait_until(lambda: refunds_at_psp(office.mesh, charge["id"]) == [-1000], timeout=20)

    def refund_shown() -> bool:
        visit(page, f"/payments/{intent['id']}")
        return "succeeded" in text_of(page) and re.search(r"\bre_\w+", text_of(page))

    wait_until(refund_shown, timeout=20, interval=0.5)
    screenshot(page, "payment-refunded")
    merchant_view = call(
        office.mesh.url(f"/v1/payment_intents/{intent['id']}"), headers=office.merchant.auth()
    ).body
    assert int(merchant_view["amount_refunded"]) == 1000
    refunds = [r for r in audit_rows(office, intent["id"]) if "refund" in r[1]]
    assert any(
        actor == "operator" and details.get("operator") == finance.email
        for actor, _action, _result, details in refunds
    ), refunds


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(page, office):
    intent = paid_through_envoy(office, amount=1800)
    [charge] = charges_of(office.mesh, intent["id"])
    sign_in(page, office.operators["finance"])
    visit(page, f"/payments/{intent['id']}")

    posted = page.evaluate(
        """async () => {
            const form = document.querySelector("form:has([name=reason])");
            const fields = new FormData(form);
            fields.set("amount", "500");
            const intact = fields.get("csrf_token");
            const post = () =>
                fetch(form.action, {method: "POST", body: new URLSearchParams(fields)});
            fields.delete("csrf_token");
            const without = await post();
            fields.set("csrf_token", "not-" + intact);
            const wrong = await post();
            return [intact.length > 0, without.status, wrong.status];
        }"""
    )

    assert posted == [True, 403, 403]
    time.sleep(1)  # what a wrongly accepted refund would need to reach the PSP
    assert refunds_at_psp(office.mesh, charge["id"]) == []
    visit(page, f"/payments/{intent['id']}")
    assert not re.search(r"\bre_\w+", text_of(page))


def test_a_sign_in_posted_without_its_csrf_token_is_refused(page, office):
    finance = office.operators["finance"]
    visit(page, "/login")
    answer = page.request.post(
        "/login", form={"email": finance.email, "password": finance.password}, max_redirects=0
    )
    assert answer.status == 403
    assert page.request.get("/payments", max_redirects=0).status == 303


# --- reconciliation and dead letters ------------------------------------------------------------


def moment(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_finance_resolves_a_reconciliation_mismatch_with_a_note(page, office):
    mesh = office.mesh
    start = datetime.now(UTC).replace(microsecond=0)
    card = sandbox(mesh, "/v1/cards", {"number": "4242424242424242", "exp_month": 12})
    behind_our_back = sandbox(
        mesh, "/v1/charges", {"card": card["id"], "amount": 7777, "currency": "usd"}
    )
    period = {"psp": "sandbox", "from": moment(start), "to": moment(start + timedelta(seconds=2))}
    time.sleep(max(0.0, (start + timedelta(seconds=2) - datetime.now(UTC)).total_seconds()))
    run = grpcurl(
        mesh, "gateway", "paymesh.gateway.v1.ReconciliationService/RunReconciliation", period
    )
    assert run.returncode == 0, run.stderr
    reference = behind_our_back["id"]
    assert reference in run.stdout

    finance = office.operators["finance"]
    sign_in(page, finance)
    visit(page, "/reconciliation")
    row = page.locator(f"tr:has-text('{reference}'), li:has-text('{reference}')").first
    row.wait_for()
    screenshot(page, "reconciliation")
    form = page.locator(f"form:has-text('{reference}'), form:near(:text('{reference}'))").first
    if row.locator("form").count():
        form = row.locator("form").first
    form.locator("[name=note]").fill("charged at the PSP's dashboard; refunded there")
    with page.expect_navigation():
        form.locator("button, input[type=submit]").first.click()
    assert_no_card_numbers(page)

    with psycopg.connect(office.infra.database_url) as db:
        state, by, note = db.execute(
            "SELECT state, resolved_by, note FROM gateway.reconciliation_mismatches"
            " WHERE reference = %s",
            (reference,),
        ).fetchone()
    assert state in ("resolved", "ignored")
    assert finance.email in (by or "")
    assert note == "charged at the PSP's dashboard; refunded there"


def test_ops_retries_a_dead_webhook_delivery_and_it_is_delivered(page, office):
    hooks = office.hooks
    merchant = hooks.merchant("backoffice-dead-letters")
    path = f"/backoffice-dead-{time.time_ns()}"
    # Every attempt of the schedule fails; the operator's retry meets a healthy receiver.
    hooks.receiver.scripts[path] = Script(statuses=[500] * len(SCHEDULE) + [200])
    hooks.endpoint(merchant, path, events=("payment_intent.succeeded",))
    intent = pay(hooks.mesh, merchant, amount=1234).body
    hooks.deliveries(path, len(SCHEDULE))

    sign_in(page, office.operators["ops"])

    def dead_row():
        visit(page, "/dead-letters")
        row = page.locator(f"tr:has-text('{path}'), tr:has-text('{intent['id']}')")
        return row.count() and row.first

    row = wait_until(dead_row, timeout=20, interval=0.5)
    screenshot(page, "dead-letters")
    with page.expect_navigation():
        row.locator("form:has-text('Retry') button, button:has-text('Retry')").first.click()
    assert_no_card_numbers(page)

    [delivered] = wait_until(
        lambda: hooks.receiver.at(path)[len(SCHEDULE) :], timeout=20, interval=0.2
    )
    assert json.loads(delivered.body)["type"] == "payment_intent.succeeded"

    def gone_from_dead_letters() -> bool:
        visit(page, "/dead-letters")
        return page.locator(f"tr:has-text('{path}'), tr:has-text('{intent['id']}')").count() == 0

    wait_until(gone_from_dead_letters, timeout=20, interval=0.5)


# --- every screen -----------------------------------------------------------------------------


def test_each_main_screen_renders_without_a_card_number(page, office):
    """As admin, who sees them all: a screenshot of each, a subscription's and a payment's
    page among them, and no card number (nor any test card number) in any page's HTML."""
    intent = paid_through_envoy(office, amount=3333)
    subscription = subscribe(office.mesh, office.merchant, amount=3434).body
    sign_in(page, office.operators["admin"])
    for path in [
        *EVERY_PAGE,
        f"/payments/{intent['id']}",
        f"/subscriptions/{subscription['id']}",
    ]:
        response = visit(page, path)
        assert response.status == 200, (path, text_of(page))
        name = path.strip("/").replace("/", "-")
        screenshot(page, name if "/" not in path.strip("/") else name.split("-")[0][:-1])
