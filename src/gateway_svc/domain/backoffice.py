"""The back office's rules as plain values: what a search's free text means, the search's
filters checked, the PSP attempts a payment's audit rows tell of, and the ledger's records as
an ERP's money movements. No SQL and no protobuf here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway_svc.domain import validation
from gateway_svc.domain.disputes import CLOSED, DisputeStatus
from paymesh.platform.problems import InvalidArgument

PSPS = ("sandbox", "stripe")
DEFAULT_LIMIT = 25
DEFAULT_DISPUTE_LIMIT = 50
DISPUTE_STATUSES = tuple(status.value for status in DisputeStatus)
OPEN_DISPUTES = tuple(status.value for status in DisputeStatus if status not in CLOSED)
MAX_TEXT = 1000

_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class Term:
    """What a search's free text names: `intent` (a pi_ id), `merchant` (an acct_ id),
    `amount` (minor units) or `reference` (a PSP's charge or refund id)."""

    kind: str
    value: str | int


def parse_query(q: str) -> Term | None:
    text = q.strip()
    if not text:
        return None
    if validation.id_shaped(text, "pi_"):
        return Term("intent", text)
    if validation.id_shaped(text, "acct_"):
        return Term("merchant", text)
    if _DIGITS.fullmatch(text):
        return Term("amount", int(text))
    return Term("reference", text)


@dataclass(frozen=True)
class PaymentSearch:
    """A SearchPayments request, checked: every filter optional, combined with AND."""

    term: Term | None = None
    merchant_id: str = ""
    status: str = ""
    psp: str = ""
    amount_min: int = 0
    amount_max: int = 0
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = DEFAULT_LIMIT
    starting_after: str = ""


def payment_search(
    q: str = "",
    merchant_id: str = "",
    status: str = "",
    psp: str = "",
    amount_min: int = 0,
    amount_max: int = 0,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = 0,
    starting_after: str = "",
) -> PaymentSearch:
    """The search, or InvalidArgument naming the first field that cannot be one."""
    for name, value in (("q", q), ("merchant_id", merchant_id), ("status", status)):
        if len(value) > MAX_TEXT:
            raise InvalidArgument.for_field(name, "too_long", f"at most {MAX_TEXT} characters")
    psp_filter(psp)
    for name, amount in (("amount_min", amount_min), ("amount_max", amount_max)):
        if amount < 0:
            raise InvalidArgument.for_field(name, "invalid_amount", f"{name} must be positive")
    if amount_min and amount_max and amount_min > amount_max:
        raise InvalidArgument.for_field(
            "amount_max", "invalid_amount", "amount_max is below amount_min"
        )
    if created_from and created_to and created_from >= created_to:
        raise InvalidArgument.for_field(
            "created_to", "invalid_period", "created_to must be after created_from"
        )
    if starting_after and not validation.id_shaped(starting_after, "pi_"):
        raise InvalidArgument.for_field("starting_after", "invalid_value", "a pi_… id")
    return PaymentSearch(
        parse_query(q),
        merchant_id.strip(),
        status.strip(),
        psp,
        amount_min,
        amount_max,
        created_from,
        created_to,
        page_size(limit, DEFAULT_LIMIT),
        starting_after,
    )


def cards_to_look_up(payment_methods: Iterable[str | None]) -> list[str]:
    """The payment methods whose masked cards a page shows, once each, in order: those the
    payments have (a payment may have none yet)."""
    return list(dict.fromkeys(pm for pm in payment_methods if pm))


def psp_filter(psp: str) -> str:
    if psp and psp not in PSPS:
        raise InvalidArgument.for_field("psp", "invalid_value", f"psp must be one of {PSPS}")
    return psp


def page_size(limit: int, default: int) -> int:
    size = limit or default
    if not 1 <= size <= 100:
        raise InvalidArgument.for_field("limit", "invalid_limit", "limit must be 1 to 100")
    return size


def dispute_statuses(status: str) -> tuple[str, ...]:
    """The statuses a dispute search takes (every one when unset)."""
    if not status:
        return ()
    if status == "open":
        return OPEN_DISPUTES
    if status not in DISPUTE_STATUSES:
        raise InvalidArgument.for_field(
            "status", "invalid_value", f"status must be open or one of {DISPUTE_STATUSES}"
        )
    return (status,)


def period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """[from, to): both required, in that order."""
    if start is None:
        raise InvalidArgument.for_field("from", "missing", "from is required")
    if end is None:
        raise InvalidArgument.for_field("to", "missing", "to is required")
    if end <= start:
        raise InvalidArgument.for_field("to", "invalid_period", "to must be after from")
    return start, end


def operator_request(operator: str, reason: str, key: str) -> None:
    """An operator's refund names who asked, why, and its idempotency key."""
    for name, value in (("operator", operator), ("reason", reason), ("idempotency_key", key)):
        if not value.strip():
            raise InvalidArgument.for_field(name, "missing", f"{name} is required")
        if len(value) > MAX_TEXT:
            raise InvalidArgument.for_field(name, "too_long", f"at most {MAX_TEXT} characters")


# --- PSP attempts ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRow:
    at: datetime
    actor: str
    action: str
    object_id: str
    result: str
    details: dict[str, Any]
    chain: int = 0  # which of its merchant's audit chains holds it


@dataclass(frozen=True)
class Attempt:
    key: str
    psp: str
    operation: str
    outcome: str
    psp_reference: str
    trace_id: str
    at: datetime
    code: str


# The audit actions that record a PSP's answer, as the operation asked; `…_started` rows only
# reserve one.
_OPERATIONS = {"confirm": "authorize", "capture": "capture", "void": "cancel", "refund": "refund"}
_OUTCOMES = {
    "succeeded": "succeeded",
    "authorized": "succeeded",
    "ok": "succeeded",
    "declined": "declined",
    "failed": "declined",
    "requires_action": "requires_action",
    "psp_unavailable": "not_processed",
}


def psp_attempts(
    rows: list[AuditRow],
    intent_psp: str,
    intent_reference: str,
    attempt_key: str,
    refund_references: dict[str, str],
) -> list[Attempt]:
    """The calls to PSPs a payment's audit rows (oldest first) record: each authorization,
    capture, void and refund answered. The intent's last authorization carries its attempt
    key and the PSP's reference; a refund is made at the PSP under its own id."""
    last_confirm = max((i for i, row in enumerate(rows) if row.action == "confirm"), default=-1)
    attempts = []
    for i, row in enumerate(rows):
        operation = _OPERATIONS.get(row.action)
        if operation is None:
            continue
        details = row.details
        key, reference = "", ""
        if operation == "refund":
            key, reference = row.object_id, refund_references.get(row.object_id, "")
        elif i == last_confirm:
            key = attempt_key
            reference = intent_reference if row.result in ("succeeded", "authorized") else ""
        attempts.append(
            Attempt(
                key=key,
                psp=str(details.get("psp") or intent_psp),
                operation=operation,
                outcome=_OUTCOMES.get(row.result, row.result),
                psp_reference=reference,
                trace_id=str(details.get("trace_id", "")),
                at=row.at,
                code=str(details.get("decline_code") or details.get("why") or ""),
            )
        )
    return attempts


def operator_of(actor: str, details: dict[str, Any]) -> str:
    """The operator's email of an audit row written on an operator's word."""
    return str(details.get("operator", "")) if actor == "operator" else ""


# --- money movements ---------------------------------------------------------------------


@dataclass(frozen=True)
class Movement:
    type: str
    id: str
    payment_intent: str
    merchant_id: str
    amount: int
    currency: str
    psp: str
    psp_reference: str
    settled: datetime
    fee: int | None = None


# Money in is positive, money out negative.
_SIGNS = {"capture": 1, "refund": -1, "dispute": -1, "dispute_reversal": 1}


def movement(
    kind: str,
    object_id: str,
    payment_intent: str,
    merchant_id: str,
    amount: int,
    currency: str,
    psp: str,
    psp_reference: str,
    settled: datetime,
) -> Movement:
    """One ledger record as an ERP line: signed minor units, uppercase ISO currency. paymesh
    records no PSP fees: `fee` stays unknown."""
    return Movement(
        kind,
        object_id,
        payment_intent,
        merchant_id,
        _SIGNS[kind] * abs(amount),
        currency.upper(),
        psp,
        psp_reference,
        settled,
    )


# --- daily figures -----------------------------------------------------------------------


@dataclass(frozen=True)
class DailyPsp:
    day: str
    psp: str
    attempted: int
    succeeded: int
    volume: dict[str, int]


def daily_by_psp(rows: list[tuple[str, str, str, int, int, int]]) -> list[DailyPsp]:
    """(day, psp, currency, attempted, succeeded, volume) rows, ordered by day and PSP, as one
    figure per day and PSP with its volume per currency."""
    days: dict[tuple[str, str], DailyPsp] = {}
    for day, psp, currency, attempted, succeeded, volume in rows:
        figure = days.get((day, psp))
        if figure is None:
            figure = days[(day, psp)] = DailyPsp(day, psp, 0, 0, {})
        days[(day, psp)] = DailyPsp(
            day,
            psp,
            figure.attempted + attempted,
            figure.succeeded + succeeded,
            {**figure.volume, **({currency: volume} if volume else {})},
        )
    return sorted(days.values(), key=lambda figure: (figure.day, figure.psp))
