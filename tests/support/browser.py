"""A real browser for the back office's tests: Debian's chromium driven by Playwright's sync
API (Playwright's own browser download cannot work here; `make chromium` installs it).

A test module launches the browser once and gives each test a fresh context (cookies and
storage of its own, so signing in as one role never leaks into the next test):

    @pytest.fixture(scope="module")
    def browser():
        with launched_browser() as launched:
            yield launched

    @pytest.fixture
    def page(browser, office):
        with fresh_page(browser, office.url) as opened:
            yield opened

Screenshots go under build/screenshots/ (git-ignored with the rest of build/)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from playwright.sync_api import Browser, Page, Response, sync_playwright

from tests.support import cards
from tests.support.pan import leaked, luhn_ok

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
# A page's waits: long enough for a mesh on a busy two-core machine, short enough to fail.
TIMEOUT_MS = 15_000


def chromium_path() -> str:
    """CHROMIUM_BIN (make test sets it), else the chromium on PATH, else Debian's path."""
    return os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"


@contextlib.contextmanager
def launched_browser() -> Iterator[Browser]:
    """Headless chromium; --no-sandbox since the tests run as root here."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox"], headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def fresh_page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A page in a context of its own, whose relative URLs (`page.goto("/payments")`) go to
    `base_url`; the context is closed afterwards."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    """The whole page as build/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# A run of 13 to 19 digits, not inside a longer run of digits.
_DIGIT_RUN = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


# The tests' own card numbers, found in any grouping (spaces, dashes) as well.
_TEST_CARDS = {number for number in cards.ALL if len(number) >= 13}


def card_numbers_in(html: str) -> set[str]:
    """Every run of 13 to 19 digits in `html` that passes the Luhn check (what a card number
    looks like), and any of the tests' card numbers however it is grouped."""
    runs = {run for run in _DIGIT_RUN.findall(html) if luhn_ok(run)}
    return runs | leaked(_TEST_CARDS, html)


def visit(page: Page, path: str) -> Response:
    """GET `path` in the page (redirects followed), and the page's HTML holds no card number."""
    response = page.goto(path)
    assert response is not None, f"no response for {path}"
    assert_no_card_numbers(page)
    return response


def assert_no_card_numbers(page: Page) -> None:
    found = card_numbers_in(page.content())
    assert not found, f"card numbers in {page.url}: {sorted(found)}"


def beside_the_browser(call: Callable[..., T], *args: object) -> T:
    """`call(*args)` in a thread of its own: Playwright's sync API keeps an event loop running
    in the test's thread, where a helper's `asyncio.run` (create_merchant) would refuse to run."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(call, *args).result()
