"""The web layer's shared pieces: templates and their filters, the signed-in guard (session,
role, CSRF), and turning an RPC's failure into an "unavailable" panel."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from backoffice import access, sessions
from backoffice.mesh import Mesh
from backoffice.records import MeshError
from backoffice.store import Store

T = TypeVar("T")
TEMPLATES = Path(__file__).parent / "templates"
# Currencies without minor units (ISO-4217 exponent 0) among those PSPs commonly take.
ZERO_DECIMAL = {
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
}


def money(amount: int, currency: str) -> str:
    """Minor units as the currency writes them, e.g. `10.01 USD`."""
    code = (currency or "").lower()
    if code in ZERO_DECIMAL:
        return f"{amount:,} {code.upper()}"
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 100)
    return f"{sign}{major:,}.{minor:02d} {code.upper()}"


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except ValueError:
        return text


environment = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), enable_async=False
)
environment.filters.update(money=money, when=when, pretty_json=pretty_json)


@dataclass
class Console:
    """What every page needs: the store, the mesh, the session lifetimes and a clock."""

    store: Store
    mesh: Mesh
    lifetimes: sessions.Lifetimes
    cookie_secure: bool
    clock: Callable[[], datetime]

    def now(self) -> datetime:
        return self.clock()


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    signed_in: sessions.SignedIn | None = getattr(request.state, "signed_in", None)
    context.setdefault("flash", None)
    context.setdefault("error", None)
    html = environment.get_template(template).render(
        request=request,
        operator=signed_in.operator if signed_in else None,
        csrf_token=signed_in.session.csrf_token if signed_in else "",
        nav=access.nav_for(signed_in.operator.role) if signed_in else [],
        **context,
    )
    return HTMLResponse(html, status_code=status)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """A call's answer, or why it failed (shown as an "unavailable" panel)."""

    value: T | None = None
    error: MeshError | None = None


async def attempt(call: Awaitable[T]) -> Outcome[T]:
    try:
        return Outcome(value=await call)
    except MeshError as error:
        return Outcome(error=error)


Handler = Callable[[Request], Awaitable[Response]]


def signed_in(handler: Handler) -> Handler:
    """The page's guard: no session → 303 to /login; a role that may not open the path →
    403; a POST whose `csrf_token` is not the session's → 403, before the handler runs."""

    async def guarded(request: Request) -> Response:
        app = console(request)
        now = app.now()
        found = await sessions.resume(
            app.store, request.cookies.get(sessions.SESSION_COOKIE), app.lifetimes, now
        )
        if found is None:
            response = RedirectResponse("/login", status_code=303)
            response.delete_cookie(sessions.SESSION_COOKIE)
            return response
        request.state.signed_in = found
        if not access.may_open(found.operator.role, request.url.path):
            return render(
                request,
                "error.html",
                403,
                title="Forbidden",
                message="Your role may not open this page.",
            )
        if request.method == "POST":
            form = await request.form()
            token = form.get("csrf_token")
            if not sessions.same_token(
                found.session.csrf_token, token if isinstance(token, str) else None
            ):
                return render(
                    request,
                    "error.html",
                    403,
                    title="Forbidden",
                    message="The form's CSRF token is missing or stale: reload the "
                    "page and try again.",
                )
        return await handler(request)

    return guarded


def operator_of(request: Request) -> str:
    found: sessions.SignedIn = request.state.signed_in
    return found.operator.email


def role_of(request: Request) -> str:
    found: sessions.SignedIn = request.state.signed_in
    return found.operator.role


def days_back(now: datetime, days: int) -> tuple[datetime, datetime]:
    """[midnight `days` days ago, tomorrow's midnight) in UTC."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days - 1), today + timedelta(days=1)
