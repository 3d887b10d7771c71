"""The back office in a real browser (issue 32): Debian's chromium, driven by Playwright,
against a whole mesh with the back office. Operators sign in as each role, find a payment a
merchant made through Envoy, read its timeline, refund it and watch the refund reach the
sandbox PSP's ledger; resolve a reconciliation mismatch; retry a dead webhook delivery and see
it delivered. A role sees only its pages (403 otherwise), a visitor without a session is sent
to /login, a form posted without its CSRF token is refused, and no page's HTML holds a card
number. Each main screen is saved under build/screenshots/.

One mesh for the module (tests.support.backoffice.backoffice_mesh: webhook_svc admits the
loopback receiver and retries on a compressed schedule), one browser for the module."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from playwright.sync_api import Browser, Page

from dev.devinfra import Infra
from dev.devmesh import Mesh
from tests.support.backoffice import ROLES, backoffice_mesh
from tests.support.browser import (
    assert_no_card_numbers,
    beside_the_browser,
    fresh_page,
    launched_browser,
    screenshot,
    visit,
)
from tests.support.http import call
from tests.support.mesh import TestMerchant, create_merchant
from tests.support.ops import grpcurl
from tests.support.payments import pay, post
from tests.support.psp import charges_of, refunds_at_psp, sandbox
from tests.support.rebill import subscribe
from tests.support.receiver import Receiver, Script, running_receiver
from tests.support.waiting import wait_until
from tests.support.webhooks import SCHEDULE, WEBHOOK_ENV

pytestmark = pytest.mark.integration

# What each role may open (issue 32 and the shared decisions): any other page is a 403.
FINANCE = {"/payments", "/subscriptions", "/reconciliation", "/disputes", "/exports"}
OPS = {"/dead-letters", "/merchants", "/system", "/subscriptions"}
PAGES_OF = {"finance": FINANCE, "ops": OPS, "admin": FINANCE | OPS | {"/operators"}}
EVERY_PAGE = sorted(PAGES_OF["admin"])


@dataclass(frozen=True)
class Operator:
    email: str
    password: str


@dataclass(frozen=True)
class Office:
    mesh: Mesh
    infra: Infra
    url: str
    operators: dict[str, Operator]  # by role
    merchant: TestMerchant  # pays through Envoy
    receiver: Receiver  # the merchants' webhook endpoints

    def merchant_named(self, name: str) -> TestMerchant:
        return beside_the_browser(create_merchant, self.infra, name)


@pytest.fixture(scope="module")
def office(infra, tmp_path_factory) -> Iterator[Office]:
    """The mesh with the back office, an operator of each role, a merchant, a receiver.
    (`infra` makes the run's service keys, the back office's among them.)"""
    log_dir = tmp_path_factory.mktemp("backoffice-browser")
    with running_receiver() as receiver, backoffice_mesh(log_dir, **WEBHOOK_ENV) as running:
        operators = {role: Operator(*running.operator(role)) for role in ROLES}
        shop = beside_the_browser(create_merchant, running.infra, "bo-shop")
        yield Office(running.mesh, running.infra, running.url, operators, shop, receiver)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_browser() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, office: Office) -> Iterator[Page]:
    with fresh_page(browser, office.url) as opened:
        yield opened


def sign_in(page: Page, operator: Operator) -> None:
    """Through the /login form, as a person would: lands on the role's first page."""
    visit(page, "/login")
    form = page.get_by_test_id("login-form")
    form.locator("input[name=email]").fill(operator.email)
    form.locator("input[name=password]").fill(operator.password)
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert "/login" not in page.url, text_of(page)
    assert page.get_by_test_id("who").inner_text().startswith(operator.email)
    assert_no_card_numbers(page)


def text_of(page: Page) -> str:
    """The page's visible text, whitespace folded."""
    return " ".join(page.inner_text("body").split())


def forbidden(page: Page, path: str) -> bool:
    """`path` answers the 403 page."""
    response = visit(page, path)
    return response.status == 403 and page.get_by_test_id("error-title").inner_text() == "Forbidden"


def fully_shown(page: Page) -> bool:
    """No panel of the page says that a service did not answer."""
    return page.get_by_test_id("unavailable").count() == 0


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


@pytest.mark.parametrize("role", ROLES)
def test_each_role_signs_in_and_opens_its_pages_and_no_other(page, office, role):
    sign_in(page, office.operators[role])
    screenshot(page, f"signed-in-{role}")
    nav = {link.get_attribute("href") for link in page.get_by_test_id("nav").locator("a").all()}
    assert nav == PAGES_OF[role]

    for path in EVERY_PAGE:
        if path in PAGES_OF[role]:
            assert visit(page, path).status == 200, (role, path, text_of(page))
        else:
            assert forbidden(page, path), (role, path)


def test_ops_gets_the_403_page_for_payments_and_finance_for_dead_letters(browser, office):
    intent = paid_through_envoy(office, amount=1111)
    with fresh_page(browser, office.url) as ops:
        sign_in(ops, office.operators["ops"])
        assert forbidden(ops, "/payments")
        assert forbidden(ops, f"/payments/{intent['id']}")
        assert intent["id"] not in ops.content()
        screenshot(ops, "forbidden")
    with fresh_page(browser, office.url) as finance:
        sign_in(finance, office.operators["finance"])
        assert forbidden(finance, "/dead-letters")
        assert forbidden(finance, "/merchants")


def test_a_visitor_without_a_session_is_sent_to_the_sign_in_page(page, office):
    for path in [*EVERY_PAGE, "/payments/pi_anything"]:
        answer = page.request.get(path, max_redirects=0)
        assert answer.status == 303, (path, answer.status)
        assert answer.headers["location"].endswith("/login"), (path, answer.headers)
    visit(page, "/payments")
    assert page.url.endswith("/login")
    assert page.get_by_test_id("login-form").locator("input[name=csrf_token]").count() == 1
    screenshot(page, "login")


def test_a_wrong_password_does_not_sign_in(page, office):
    visit(page, "/login")
    form = page.get_by_test_id("login-form")
    form.locator("input[name=email]").fill(office.operators["finance"].email)
    form.locator("input[name=password]").fill(office.operators["finance"].password + "x")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert page.get_by_test_id("login-form").count() == 1
    assert page.request.get("/payments", max_redirects=0).status == 303


# --- payments ---------------------------------------------------------------------------------


def search(page: Page, query: str, intent_id: str) -> None:
    """Types `query` into the payments search and waits for `intent_id` among the results
    (htmx swaps them in; without script, the form's GET would show them)."""
    box = page.locator("#q")
    box.fill(query)
    box.press("Enter")
    page.locator(f"tr[data-payment-id='{intent_id}']").wait_for()
    assert_no_card_numbers(page)


def test_finance_finds_a_payment_made_through_envoy_and_reads_its_timeline(page, office):
    intent = paid_through_envoy(office, amount=4321)
    sign_in(page, office.operators["finance"])

    for query in (office.merchant.id, "4321", intent["id"]):
        visit(page, "/payments")
        search(page, query, intent["id"])
    screenshot(page, "payments-search")

    with page.expect_navigation():
        page.locator(f"a[href='/payments/{intent['id']}']").first.click()
    assert page.url.endswith(f"/payments/{intent['id']}")
    assert_no_card_numbers(page)
    assert fully_shown(page)
    assert page.get_by_test_id("chain-badge").get_attribute("data-verified") == "true"
    shown = [
        [cell.inner_text().strip() for cell in row.locator("td").all()]
        for row in page.get_by_test_id("timeline").locator("tbody tr").all()
    ]
    rows = audit_rows(office, intent["id"])
    assert rows, "a payment through Envoy has audit rows"
    # At, actor, action, object, result, details: each payment_audit row, oldest first.
    assert [(r[1], r[2], r[4]) for r in shown] == [(a, b, c) for a, b, c, _ in rows]
    [charge] = charges_of(office.mesh, intent["id"])
    assert charge["id"] in page.get_by_test_id("attempts").inner_text()
    screenshot(page, "payment")


def test_a_payments_page_shows_its_card_masked(page, office):
    intent = paid_through_envoy(office, amount=4322)
    sign_in(page, office.operators["finance"])
    visit(page, f"/payments/{intent['id']}")
    summary = " ".join(page.get_by_test_id("payment-summary").inner_text().split())
    assert re.search(r"Card visa •••• 4242", summary, re.IGNORECASE), summary
    assert page.get_by_test_id("card-fingerprint").inner_text().strip()
    assert_no_card_numbers(page)


def refund_in_page(page: Page, amount: str, reason: str) -> None:
    form = page.get_by_test_id("refund-form")
    form.locator("input[name=amount]").fill(amount)
    form.locator("input[name=reason]").fill(reason)
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert_no_card_numbers(page)


def test_finance_refunds_a_payment_and_the_refund_reaches_the_psp(page, office):
    intent = paid_through_envoy(office, amount=2500)
    [charge] = charges_of(office.mesh, intent["id"])
    finance = office.operators["finance"]
    sign_in(page, finance)
    visit(page, f"/payments/{intent['id']}")

    refund_in_page(page, "1000", "customer returned one item")

    assert page.get_by_test_id("flash").count() == 1, text_of(page)
    wait_until(lambda: refunds_at_psp(office.mesh, charge["id"]) == [-1000], timeout=20)

    def refund_shown() -> bool:
        visit(page, f"/payments/{intent['id']}")
        refunds = page.get_by_test_id("refunds").inner_text()
        return "10.00 USD" in refunds and "succeeded" in refunds

    wait_until(refund_shown, timeout=20, interval=0.5)
    assert page.get_by_test_id("amount-refunded").inner_text() == "10.00 USD"
    # The timeline names the operator; the reason is in the row's details.
    timeline = page.get_by_test_id("timeline")
    by_operator = timeline.locator(f"tbody tr:has-text('operator ({finance.email})')")
    assert by_operator.count() >= 1, timeline.inner_text()
    assert "customer returned one item" in by_operator.first.inner_html()
    screenshot(page, "payment-refunded")
    merchant_view = call(
        office.mesh.url(f"/v1/payment_intents/{intent['id']}"), headers=office.merchant.auth()
    ).body
    assert int(merchant_view["amount_refunded"]) == 1000
    # The gateway's audit of the refund names the operator and the reason.
    with psycopg.connect(office.infra.database_url) as db:
        [refund_id] = db.execute(
            "SELECT id FROM gateway.refunds WHERE payment_intent = %s", (intent["id"],)
        ).fetchone()
    audited = [(actor, details) for actor, _, _, details in audit_rows(office, refund_id)]
    assert ("operator", finance.email, "customer returned one item") in {
        (actor, details.get("operator"), details.get("reason")) for actor, details in audited
    }, audited


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(page, office):
    intent = paid_through_envoy(office, amount=1800)
    [charge] = charges_of(office.mesh, intent["id"])
    sign_in(page, office.operators["finance"])
    visit(page, f"/payments/{intent['id']}")

    statuses = page.evaluate(
        """async () => {
            const form = document.querySelector("[data-testid=refund-form]");
            const fields = new FormData(form);
            fields.set("amount", "500");
            fields.set("reason", "no token");
            const token = fields.get("csrf_token");
            const post = () =>
                fetch(form.action, {method: "POST", body: new URLSearchParams(fields)});
            fields.delete("csrf_token");
            const without = await post();
            fields.set("csrf_token", "x" + token.slice(1));
            const wrong = await post();
            return [token.length > 0, without.status, wrong.status];
        }"""
    )

    assert statuses == [True, 403, 403]
    visit(page, f"/payments/{intent['id']}")
    assert "No refunds." in page.get_by_test_id("refunds").inner_text()
    assert refunds_at_psp(office.mesh, charge["id"]) == []


def test_a_sign_in_posted_without_its_csrf_token_is_refused(page, office):
    finance = office.operators["finance"]
    visit(page, "/login")  # the pre-session CSRF cookie is set: only the field is missing
    answer = page.request.post(
        "/login", form={"email": finance.email, "password": finance.password}, max_redirects=0
    )
    assert answer.status == 403
    assert page.request.get("/payments", max_redirects=0).status == 303


# --- reconciliation and dead letters ------------------------------------------------------------


def moment(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def mismatch_behind_our_back(mesh: Mesh) -> str:
    """A charge made at the sandbox PSP, not through paymesh, found by a reconciliation run of
    the seconds around it: a `missing_in_ledger` mismatch; its reference."""
    start = datetime.now(UTC).replace(microsecond=0)
    card = sandbox(mesh, "/v1/cards", {"number": "4242424242424242", "exp_month": 12})
    charge = sandbox(mesh, "/v1/charges", {"card": card["id"], "amount": 7777, "currency": "usd"})
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
    run = grpcurl(
        mesh,
        "gateway",
        "paymesh.gateway.v1.ReconciliationService/RunReconciliation",
        {"psp": "sandbox", "from": moment(start), "to": moment(end)},
    )
    assert run.returncode == 0 and charge["id"] in run.stdout, run.stderr or run.stdout
    return charge["id"]


def test_finance_resolves_a_reconciliation_mismatch_with_a_note(page, office):
    reference = mismatch_behind_our_back(office.mesh)
    finance = office.operators["finance"]
    sign_in(page, finance)
    visit(page, "/reconciliation")
    assert fully_shown(page)
    row = page.locator(f"tr[data-mismatch-id]:has-text('{reference}')")
    screenshot(page, "reconciliation")

    note = "charged on the PSP's dashboard; refunded there"
    row.locator("input[name=note]").fill(note)
    with page.expect_navigation():
        row.get_by_role("button", name="Resolve").click()
    assert_no_card_numbers(page)

    assert page.get_by_test_id("flash").count() == 1, text_of(page)
    assert page.locator(f"tr[data-mismatch-id]:has-text('{reference}')").count() == 0
    visit(page, "/reconciliation?state=resolved")
    closed = page.locator(f"tr[data-mismatch-id]:has-text('{reference}')").inner_text()
    assert f"resolved by {finance.email}: {note}" in " ".join(closed.split())


def test_ops_retries_a_dead_webhook_delivery_and_it_is_delivered(page, office):
    receiver = office.receiver
    merchant = office.merchant_named("bo-dead-letters")
    path = f"/backoffice-dead-{uuid.uuid4().hex[:12]}"  # no long digit run in the page
    # Every attempt of the schedule fails; the operator's retry meets a healthy receiver.
    receiver.scripts[path] = Script(statuses=[500] * len(SCHEDULE) + [200])
    endpoint = {"url": receiver.url(path), "enabled_events": ["payment_intent.succeeded"]}
    assert post(office.mesh, merchant, "/v1/webhook_endpoints", endpoint).status == 200
    pay(office.mesh, merchant, amount=1234)
    wait_until(lambda: len(receiver.at(path)) == len(SCHEDULE), timeout=20)
    sign_in(page, office.operators["ops"])

    def dead_row():
        visit(page, "/dead-letters")
        row = page.get_by_test_id("dead-deliveries").locator(f"tr:has-text('{path}')")
        return row.count() == 1 and row

    row = wait_until(dead_row, timeout=20, interval=0.5)
    assert fully_shown(page)
    screenshot(page, "dead-letters")
    with page.expect_navigation():
        row.get_by_role("button", name="Retry").click()
    assert_no_card_numbers(page)
    assert page.get_by_test_id("flash").count() == 1, text_of(page)

    [delivered] = wait_until(lambda: receiver.at(path)[len(SCHEDULE) :], timeout=20, interval=0.2)
    assert json.loads(delivered.body)["type"] == "payment_intent.succeeded"
    wait_until(lambda: not dead_row(), timeout=20, interval=0.5)


# --- every screen -----------------------------------------------------------------------------


def test_each_main_screen_shows_without_a_card_number(page, office):
    """As admin, who sees them all: each page whole (no "unavailable" panel), a screenshot
    of each (a payment's and a subscription's page among them), and no card number in any
    page's HTML."""
    intent = paid_through_envoy(office, amount=3333)
    subscription = subscribe(office.mesh, office.merchant, amount=3434).body
    sign_in(page, office.operators["admin"])
    screens = {path.strip("/"): path for path in EVERY_PAGE}
    screens["payment"] = f"/payments/{intent['id']}"
    screens["subscription"] = f"/subscriptions/{subscription['id']}"

    for name, path in screens.items():
        assert visit(page, path).status == 200, (path, text_of(page))
        page.wait_for_load_state("networkidle")  # htmx's lazy parts (the charts)
        assert_no_card_numbers(page)
        assert fully_shown(page), (path, text_of(page))
        screenshot(page, name)
