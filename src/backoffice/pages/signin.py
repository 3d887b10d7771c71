"""Signing in and out. The sign-in form posts `email`, `password` and `csrf_token` (the
pre-session cookie's token); each attempt is audited, a failure without saying which part
was wrong."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from backoffice import access, sessions
from backoffice.passwords import verify_password
from backoffice.web import console, render, signed_in

LOGIN_CSRF_SECONDS = 3600


def _set_cookie(
    response: Response, name: str, value: str, secure: bool, max_age: int | None
) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="strict"
    )


async def login_page(request: Request) -> Response:
    app = console(request)
    found = await sessions.resume(
        app.store, request.cookies.get(sessions.SESSION_COOKIE), app.lifetimes, app.now()
    )
    if found is not None:
        return RedirectResponse(access.home_for(found.operator.role), status_code=303)
    return _login_form(request)


def _login_form(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = request.cookies.get(sessions.LOGIN_CSRF_COOKIE) or sessions.new_token()
    response = render(request, "login.html", status, login_csrf=token, error=error)
    _set_cookie(
        response,
        sessions.LOGIN_CSRF_COOKIE,
        token,
        console(request).cookie_secure,
        LOGIN_CSRF_SECONDS,
    )
    return response


async def login(request: Request) -> Response:
    app = console(request)
    form = await request.form()
    email = str(form.get("email") or "").strip().lower()
    password = str(form.get("password") or "")
    expected = request.cookies.get(sessions.LOGIN_CSRF_COOKIE) or ""
    if not sessions.same_token(expected, str(form.get("csrf_token") or "")):
        return render(
            request,
            "error.html",
            403,
            title="Forbidden",
            message="The sign-in form's CSRF token is missing or stale: reload "
            "the sign-in page and try again.",
        )
    operator = await app.store.operator(email) if email else None
    if not verify_password(operator.password_hash if operator else None, password) or not operator:
        await app.store.audit(email[:254] or "(none)", "signin", email[:40], "failed")
        return _login_form(request, 401, "Wrong email or password.")
    session_id, _ = await sessions.start(app.store, operator, app.now())
    await app.store.audit(operator.email, "signin", operator.email[:40], "succeeded")
    response = RedirectResponse(access.home_for(operator.role), status_code=303)
    _set_cookie(response, sessions.SESSION_COOKIE, session_id, app.cookie_secure, None)
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE)
    return response


@signed_in
async def logout(request: Request) -> Response:
    app = console(request)
    found: sessions.SignedIn = request.state.signed_in
    await app.store.end_session(found.session.digest)
    await app.store.audit(found.operator.email, "signout", found.operator.email[:40], "succeeded")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(sessions.SESSION_COOKIE)
    return response


async def home(request: Request) -> Response:
    app = console(request)
    found = await sessions.resume(
        app.store, request.cookies.get(sessions.SESSION_COOKIE), app.lifetimes, app.now()
    )
    target = access.home_for(found.operator.role) if found else "/login"
    return RedirectResponse(target, status_code=303)
