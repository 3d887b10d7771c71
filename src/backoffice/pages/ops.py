"""Ops' pages: dead letters (rebill jobs and webhook deliveries), merchants (keys, routing)
and the system's state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from backoffice.records import MeshError
from backoffice.web import attempt, console, operator_of, render, signed_in


async def _dead_letters_page(request: Request, status: int = 200, **context: object) -> Response:
    mesh = console(request).mesh
    letters = await attempt(mesh.dead_letters())
    deliveries = await attempt(mesh.dead_deliveries())
    return render(
        request, "dead_letters.html", status, letters=letters, deliveries=deliveries, **context
    )


@signed_in
async def dead_letters(request: Request) -> Response:
    return await _dead_letters_page(request)


async def _act(
    request: Request,
    action: str,
    object_id: str,
    call: Callable[[], Awaitable[object]],
    page: Callable[..., Awaitable[Response]],
    done: str,
) -> Response:
    """Runs an operator's action, audits it either way, and shows the page with the result."""
    store, operator = console(request).store, operator_of(request)
    try:
        answer = await call()
    except MeshError as error:
        await store.audit(
            operator, action, object_id, "refused", code=error.code, message=error.message
        )
        return await page(request, 409, error=f"Refused: {error.message} ({error.code})")
    result = str(getattr(answer, "status", "done"))
    await store.audit(operator, action, object_id, result)
    return await page(request, flash=f"{done} ({result}).")


@signed_in
async def dead_letter_action(request: Request) -> Response:
    mesh, operator = console(request).mesh, operator_of(request)
    kind, item, verb = (request.path_params[k] for k in ("kind", "item_id", "verb"))
    calls = {
        ("rebill", "retry"): lambda: mesh.retry_dead_letter(item, operator),
        ("rebill", "discard"): lambda: mesh.discard_dead_letter(item, operator),
        ("webhooks", "retry"): lambda: mesh.retry_delivery(item, operator),
        ("webhooks", "discard"): lambda: mesh.discard_delivery(item, operator),
    }
    if (kind, verb) not in calls:
        return render(request, "error.html", 404, title="Not found", message="No such action.")
    action = f"{'dead_letter' if kind == 'rebill' else 'delivery'}.{verb}"
    return await _act(
        request, action, item, calls[(kind, verb)], _dead_letters_page, f"{item}: {verb}"
    )


async def _merchants_page(request: Request, status: int = 200, **context: object) -> Response:
    found = await attempt(console(request).mesh.merchants())
    return render(request, "merchants.html", status, found=found, **context)


@signed_in
async def merchants(request: Request) -> Response:
    return await _merchants_page(request)


@signed_in
async def roll_key(request: Request) -> Response:
    app, operator = console(request), operator_of(request)
    merchant_id = request.path_params["merchant_id"]
    livemode = str((await request.form()).get("livemode") or "") == "true"
    try:
        rolled = await app.mesh.roll_key(merchant_id, livemode)
    except MeshError as error:
        await app.store.audit(operator, "api_key.roll", merchant_id, "refused", code=error.code)
        return await _merchants_page(request, 409, error=f"Refused: {error.message} ({error.code})")
    await app.store.audit(
        operator,
        "api_key.roll",
        merchant_id,
        "rolled",
        livemode=livemode,
        last4=rolled.secret_key[-4:],
    )
    return await _merchants_page(request, rolled=rolled)


@signed_in
async def revoke_key(request: Request) -> Response:
    mesh = console(request).mesh
    merchant_id = request.path_params["merchant_id"]
    key_id = str((await request.form()).get("api_key_id") or "")
    return await _act(
        request,
        "api_key.revoke",
        key_id or merchant_id,
        lambda: mesh.revoke_key(merchant_id, key_id),
        _merchants_page,
        f"Key {key_id} of {merchant_id} revoked",
    )


@signed_in
async def routing(request: Request) -> Response:
    mesh = console(request).mesh
    merchant_id = request.path_params["merchant_id"]
    text = str((await request.form()).get("psp_routing") or "")
    psps = [p.strip() for p in text.split(",") if p.strip()]
    return await _act(
        request,
        "routing.set",
        merchant_id,
        lambda: mesh.set_routing(merchant_id, psps),
        _merchants_page,
        f"Routing of {merchant_id}: {', '.join(psps) or 'default'}",
    )


@signed_in
async def system(request: Request) -> Response:
    found = await attempt(console(request).mesh.system_status())
    return render(request, "system.html", found=found)
