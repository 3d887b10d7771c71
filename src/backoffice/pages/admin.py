"""Admin's page: the operators, and making one (its password is shown once)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from backoffice.access import ROLES
from backoffice.operators import InvalidOperator, create_operator
from backoffice.store import OperatorExists
from backoffice.web import console, operator_of, render, signed_in


async def _page(request: Request, status: int = 200, **context: object) -> Response:
    store = console(request).store
    return render(
        request,
        "operators.html",
        status,
        operators=await store.operators(),
        audit=await store.audit_rows(50),
        roles=ROLES,
        **context,
    )


@signed_in
async def operators(request: Request) -> Response:
    return await _page(request)


@signed_in
async def create(request: Request) -> Response:
    form = await request.form()
    email, role = str(form.get("email") or ""), str(form.get("role") or "")
    try:
        created, password = await create_operator(
            console(request).store, email, role, by=operator_of(request)
        )
    except InvalidOperator as error:
        return await _page(request, 400, error=str(error))
    except OperatorExists:
        return await _page(request, 409, error=f"email: {email} is an operator already")
    return await _page(request, created=created, password=password)
