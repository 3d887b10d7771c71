"""The back office's Starlette application: routes, static files and its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from backoffice import NAME, sessions
from backoffice.config import BackofficeSettings
from backoffice.mesh import Mesh, MeshClient
from backoffice.pages import admin, finance, ops, signin
from backoffice.store import PostgresStore, Store
from backoffice.web import Console, render
from paymesh.platform.db import create_engine
from paymesh.platform.service_auth import TokenIssuer

STATIC = Path(__file__).parent / "static"

ROUTES = [
    Route("/", signin.home),
    Route("/login", signin.login_page, methods=["GET"]),
    Route("/login", signin.login, methods=["POST"]),
    Route("/logout", signin.logout, methods=["POST"]),
    Route("/payments", finance.payments),
    Route("/payments/charts", finance.payment_charts),
    Route("/payments/{payment_id}", finance.payment),
    Route("/payments/{payment_id}/refund", finance.refund, methods=["POST"]),
    Route("/subscriptions", finance.subscriptions),
    Route("/subscriptions/{subscription_id}", finance.subscription),
    Route("/reconciliation", finance.reconciliation),
    Route("/reconciliation/{mismatch_id}/resolve", finance.resolve, methods=["POST"]),
    Route("/disputes", finance.disputes),
    Route("/exports", finance.exports),
    Route("/exports/money-movements.csv", finance.export_csv),
    Route("/dead-letters", ops.dead_letters),
    Route("/dead-letters/{kind}/{item_id}/{verb}", ops.dead_letter_action, methods=["POST"]),
    Route("/merchants", ops.merchants),
    Route("/merchants/{merchant_id}/roll", ops.roll_key, methods=["POST"]),
    Route("/merchants/{merchant_id}/revoke", ops.revoke_key, methods=["POST"]),
    Route("/merchants/{merchant_id}/routing", ops.routing, methods=["POST"]),
    Route("/system", ops.system),
    Route("/operators", admin.operators, methods=["GET"]),
    Route("/operators", admin.create, methods=["POST"]),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]


async def _not_found(request: Request, _exc: Exception) -> Response:
    return render(request, "error.html", 404, title="Not found", message="No such page.")


class SecurityHeaders(BaseHTTPMiddleware):
    """No framing, no sniffing, scripts and styles from this origin only, nothing cached."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'",
        )
        response.headers.setdefault("x-content-type-options", "nosniff")
        response.headers.setdefault("referrer-policy", "same-origin")
        response.headers.setdefault("cache-control", "no-store")
        return response


def create_app(
    store: Store,
    mesh: Mesh,
    settings: BackofficeSettings,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_shutdown: Callable[[], object] | None = None,
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await mesh.close()
        if on_shutdown is not None:
            await on_shutdown()  # type: ignore[misc]

    app = Starlette(
        routes=ROUTES,
        exception_handlers={404: _not_found},
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
    app.state.console = Console(
        store=store,
        mesh=mesh,
        lifetimes=sessions.Lifetimes(
            idle=timedelta(seconds=settings.session_idle_seconds),
            absolute=timedelta(seconds=settings.session_max_seconds),
        ),
        cookie_secure=settings.cookie_secure,
        clock=clock,
    )
    return app


def build_app(settings: BackofficeSettings) -> Starlette:
    """The real thing: its own database role and schema, the mesh with its own identity."""
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size, keep=1)
    mesh = MeshClient(
        settings.service_addresses,
        TokenIssuer(NAME, settings.keys_dir),
        settings.metrics_targets(),
        settings.rpc_timeout_seconds,
    )
    return create_app(PostgresStore(engine), mesh, settings, on_shutdown=engine.dispose)
