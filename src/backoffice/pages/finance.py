"""Finance's pages: payments (search, a payment's story, refunds), subscriptions,
reconciliation, disputes and the ERP export."""

from __future__ import annotations

import csv
import io
import secrets
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from backoffice import charts
from backoffice.records import MeshError, Mismatch, MoneyMovement, PaymentFilters
from backoffice.web import attempt, console, days_back, operator_of, render, role_of, signed_in

PAYMENT_STATUSES = (
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "processing",
    "requires_capture",
    "canceled",
    "succeeded",
)
PSPS = ("sandbox", "stripe")
REFUNDERS = {"finance", "admin"}
CHART_DAYS = 14
CSV_COLUMNS = (
    "type",
    "id",
    "payment_intent",
    "merchant_id",
    "amount_minor",
    "currency",
    "psp",
    "psp_reference",
    "fee_minor",
    "settled_at",
)


class BadInput(ValueError):
    """A form or query field is wrong; the message names it."""


def _digits(value: str, field: str) -> int:
    value = value.strip()
    if not value:
        return 0
    if not value.isdigit():
        raise BadInput(f"{field}: whole minor units (digits only)")
    return int(value)


def _day(value: str, field: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError:
        raise BadInput(f"{field}: a date, YYYY-MM-DD") from None


def payment_filters(params: dict[str, str]) -> PaymentFilters:
    date_to = _day(params.get("date_to", ""), "date_to")
    return PaymentFilters(
        q=params.get("q", "").strip(),
        merchant_id=params.get("merchant", "").strip(),
        status=params.get("status", "").strip(),
        psp=params.get("psp", "").strip(),
        amount_min=_digits(params.get("amount_min", ""), "amount_min"),
        amount_max=_digits(params.get("amount_max", ""), "amount_max"),
        created_from=_day(params.get("date_from", ""), "date_from"),
        created_to=date_to + timedelta(days=1) if date_to else None,  # the whole last day
        starting_after=params.get("after", "").strip(),
    )


@signed_in
async def payments(request: Request) -> Response:
    params = dict(request.query_params)
    try:
        filters = payment_filters(params)
    except BadInput as error:
        return render(
            request,
            "payments.html",
            400,
            params=params,
            results=None,
            error=str(error),
            statuses=PAYMENT_STATUSES,
            psps=PSPS,
        )
    results = await attempt(console(request).mesh.search_payments(filters))
    template = "_payments_results.html" if request.headers.get("hx-request") else "payments.html"
    return render(
        request, template, params=params, results=results, statuses=PAYMENT_STATUSES, psps=PSPS
    )


@signed_in
async def payment_charts(request: Request) -> Response:
    app = console(request)
    start, end = days_back(app.now(), CHART_DAYS)
    stats = await attempt(app.mesh.payment_stats(start, end))
    volume_svg = rate_svg = declines_svg = ""
    if stats.value is not None:
        days = sorted({d.day for d in stats.value.days})
        psps = sorted({d.psp for d in stats.value.days})
        by = {(d.day, d.psp): d for d in stats.value.days}
        volume = {
            psp: [
                sum(by[(day, psp)].volume.values()) / 100 if (day, psp) in by else 0 for day in days
            ]
            for psp in psps
        }
        rates: dict[str, list[float | None]] = {
            psp: [
                by[(day, psp)].succeeded / by[(day, psp)].attempted
                if (day, psp) in by and by[(day, psp)].attempted
                else None
                for day in days
            ]
            for psp in psps
        }
        short = [day[5:] for day in days]
        volume_svg = charts.bars(
            "Authorized volume per day and PSP (major units, all currencies)",
            short,
            volume,
            "chart-volume",
        )
        rate_svg = charts.rate_line("Success rate per day and PSP", short, rates, "chart-success")
        declines_svg = charts.bars(
            "Decline reasons",
            [code for code, _ in stats.value.declines],
            {"declines": [count for _, count in stats.value.declines]},
            "chart-declines",
        )
    return render(
        request,
        "_payment_charts.html",
        stats=stats,
        volume_svg=volume_svg,
        rate_svg=rate_svg,
        declines_svg=declines_svg,
        days=CHART_DAYS,
    )


async def _payment_page(request: Request, status: int = 200, **context: object) -> Response:
    app = console(request)
    payment_id = request.path_params["payment_id"]
    detail = await attempt(app.mesh.payment_detail(payment_id))
    deliveries = await attempt(app.mesh.deliveries_for_payment(payment_id))
    if detail.error is not None and detail.error.code == "NOT_FOUND":
        status = 404
    return render(
        request,
        "payment.html",
        status,
        payment_id=payment_id,
        detail=detail,
        deliveries=deliveries,
        may_refund=role_of(request) in REFUNDERS,
        idempotency_key=secrets.token_urlsafe(18),
        **context,
    )


@signed_in
async def payment(request: Request) -> Response:
    return await _payment_page(request)


@signed_in
async def refund(request: Request) -> Response:
    app = console(request)
    payment_id = request.path_params["payment_id"]
    form = await request.form()
    reason = str(form.get("reason") or "").strip()
    key = str(form.get("idempotency_key") or "").strip()
    operator = operator_of(request)
    if role_of(request) not in REFUNDERS:
        return render(
            request, "error.html", 403, title="Forbidden", message="Your role may not refund."
        )
    try:
        amount = _digits(str(form.get("amount") or ""), "amount")
        if not reason:
            raise BadInput("reason: required")
        if not key:
            raise BadInput("idempotency_key: required (reload the page)")
    except BadInput as error:
        return await _payment_page(request, 400, error=str(error))
    try:
        done = await app.mesh.refund_payment(payment_id, amount, reason, operator, key)
    except MeshError as error:
        await app.store.audit(
            operator,
            "refund",
            payment_id,
            "refused",
            amount=amount,
            reason=reason,
            code=error.code,
            message=error.message,
        )
        return await _payment_page(
            request,
            409 if error.code != "UNIMPLEMENTED" else 503,
            error=f"Refund refused: {error.message} ({error.code})",
        )
    await app.store.audit(
        operator,
        "refund",
        payment_id,
        done.status,
        refund=done.id,
        amount=done.amount,
        reason=reason,
    )
    return await _payment_page(
        request, flash=f"Refund {done.id} of {done.amount} minor units: {done.status}."
    )


@signed_in
async def subscriptions(request: Request) -> Response:
    app = console(request)
    params = dict(request.query_params)
    results = await attempt(
        app.mesh.search_subscriptions(
            params.get("q", "").strip(),
            params.get("merchant", "").strip(),
            params.get("status", "").strip(),
        )
    )
    if request.headers.get("hx-request"):
        return render(request, "_subscriptions_results.html", params=params, results=results)
    start, end = days_back(app.now(), CHART_DAYS)
    recovery = await attempt(app.mesh.recovery_stats(start, end))
    recovery_svg = ""
    if recovery.value is not None:
        recovery_svg = charts.rate_line(
            "Rebill recovery rate (declined renewals collected by dunning)",
            [d.day[5:] for d in recovery.value],
            {
                "recovered": [
                    d.recovered / d.declined if d.declined else None for d in recovery.value
                ]
            },
            "chart-recovery",
        )
    return render(
        request,
        "subscriptions.html",
        params=params,
        results=results,
        recovery=recovery,
        recovery_svg=recovery_svg,
    )


@signed_in
async def subscription(request: Request) -> Response:
    subscription_id = request.path_params["subscription_id"]
    detail = await attempt(console(request).mesh.subscription_detail(subscription_id))
    status = 404 if detail.error is not None and detail.error.code == "NOT_FOUND" else 200
    return render(
        request, "subscription.html", status, subscription_id=subscription_id, detail=detail
    )


MISMATCH_KINDS = (
    "missing_in_ledger",
    "missing_at_psp",
    "amount_mismatch",
    "currency_mismatch",
    "status_mismatch",
)


async def _reconciliation_page(request: Request, status: int = 200, **context: object) -> Response:
    params = dict(request.query_params)
    state = params.get("state", "open")
    found = await attempt(
        console(request).mesh.mismatches(state, params.get("kind", ""), params.get("psp", ""))
    )
    groups: dict[tuple[str, str], list[Mismatch]] = defaultdict(list)
    for mismatch in found.value or []:
        groups[(mismatch.psp, mismatch.kind)].append(mismatch)
    return render(
        request,
        "reconciliation.html",
        status,
        params={**params, "state": state},
        found=found,
        groups=sorted(groups.items()),
        kinds=MISMATCH_KINDS,
        psps=PSPS,
        **context,
    )


@signed_in
async def reconciliation(request: Request) -> Response:
    return await _reconciliation_page(request)


@signed_in
async def resolve(request: Request) -> Response:
    app = console(request)
    mismatch_id = request.path_params["mismatch_id"]
    form = await request.form()
    resolution = str(form.get("resolution") or "")
    note = str(form.get("note") or "").strip()
    operator = operator_of(request)
    if resolution not in ("resolved", "ignored"):
        return await _reconciliation_page(request, 400, error="resolution: resolved or ignored")
    if not note:
        return await _reconciliation_page(request, 400, error="note: required")
    try:
        done = await app.mesh.resolve_mismatch(mismatch_id, resolution, note, operator)
    except MeshError as error:
        await app.store.audit(
            operator,
            "mismatch.resolve",
            mismatch_id,
            "refused",
            resolution=resolution,
            note=note,
            code=error.code,
        )
        return await _reconciliation_page(
            request, 409, error=f"Refused: {error.message} ({error.code})"
        )
    await app.store.audit(operator, "mismatch.resolve", mismatch_id, done.state, note=note)
    return await _reconciliation_page(request, flash=f"Mismatch {mismatch_id}: {done.state}.")


@signed_in
async def disputes(request: Request) -> Response:
    params = dict(request.query_params)
    status = params.get("status", "open")
    found = await attempt(
        console(request).mesh.search_disputes(
            status, params.get("merchant", "").strip(), params.get("psp", "").strip()
        )
    )
    return render(
        request,
        "disputes.html",
        params={**params, "status": status},
        found=found,
        psps=PSPS,
        now=console(request).now(),
    )


@signed_in
async def exports(request: Request) -> Response:
    today = console(request).now().astimezone(UTC).date()
    return render(
        request,
        "exports.html",
        date_from=(today - timedelta(days=30)).isoformat(),
        date_to=today.isoformat(),
    )


def movements_csv(movements: list[MoneyMovement]) -> str:
    """One line per money movement, as an ERP imports it: signed minor units, uppercase ISO
    currency, the PSP's reference, the fee when known (empty otherwise)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for m in movements:
        writer.writerow(
            [
                m.type,
                m.id,
                m.payment_intent,
                m.merchant_id,
                m.amount,
                m.currency.upper(),
                m.psp,
                m.psp_reference,
                "" if m.fee is None else m.fee,
                m.settled.astimezone(UTC).isoformat().replace("+00:00", "Z") if m.settled else "",
            ]
        )
    return out.getvalue()


@signed_in
async def export_csv(request: Request) -> Response:
    app = console(request)
    params = dict(request.query_params)
    try:
        start = _day(params.get("from", ""), "from")
        last = _day(params.get("to", ""), "to")
        if start is None or last is None:
            raise BadInput("from, to: both dates are required")
        if last < start:
            raise BadInput("to: on or after from")
    except BadInput as error:
        return render(
            request,
            "exports.html",
            400,
            error=str(error),
            date_from=params.get("from", ""),
            date_to=params.get("to", ""),
        )
    end = last + timedelta(days=1)
    try:
        movements = await app.mesh.export_movements(start, end)
    except MeshError as error:
        return render(
            request,
            "exports.html",
            503,
            unavailable_error=error,
            date_from=params.get("from", ""),
            date_to=params.get("to", ""),
        )
    await app.store.audit(
        operator_of(request),
        "export",
        "money_movements",
        "succeeded",
        start=start.date().isoformat(),
        to=last.date().isoformat(),
        rows=len(movements),
    )
    name = f"money-movements-{start.date().isoformat()}-{last.date().isoformat()}.csv"
    return Response(
        movements_csv(movements),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
