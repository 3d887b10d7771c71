"""What the pages show, as plain values: the mesh facade (mesh.py) turns the services'
messages into these, and its in-memory twin (memory_mesh.py) makes them up. Money in minor
units; cards masked (brand, last 4 and fingerprint) only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


class MeshError(Exception):
    """An RPC failed: its name, the gRPC status's name and the service's message."""

    def __init__(self, call: str, code: str, message: str):
        super().__init__(f"{call}: {code}: {message}")
        self.call = call
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PaymentFilters:
    q: str = ""
    merchant_id: str = ""
    status: str = ""
    psp: str = ""
    amount_min: int = 0
    amount_max: int = 0
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = 25
    starting_after: str = ""


@dataclass(frozen=True)
class Payment:
    id: str
    merchant_id: str
    merchant_name: str
    amount: int
    currency: str
    status: str
    psp: str
    card_brand: str
    card_last4: str
    created: datetime | None
    amount_refunded: int = 0
    decline_code: str = ""
    livemode: bool = False
    card_fingerprint: str = ""  # the vault's keyed fingerprint: the same card, the same value


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool = False


@dataclass(frozen=True)
class AuditEntry:
    at: datetime | None
    actor: str
    action: str
    object_id: str
    result: str
    details_json: str
    operator: str = ""


@dataclass(frozen=True)
class PspAttempt:
    key: str
    psp: str
    operation: str
    outcome: str
    psp_reference: str
    trace_id: str
    code: str
    at: datetime | None


@dataclass(frozen=True)
class Refund:
    id: str
    amount: int
    currency: str
    status: str
    reason: str
    created: datetime | None


@dataclass(frozen=True)
class Dispute:
    id: str
    payment_intent: str
    merchant_id: str
    amount: int
    currency: str
    reason: str
    status: str
    psp: str
    evidence_due_by: datetime | None
    created: datetime | None


@dataclass(frozen=True)
class PaymentDetail:
    payment: Payment
    timeline: list[AuditEntry]
    chain_verified: bool
    chain_rows: int
    chain_problem: str
    attempts: list[PspAttempt]
    refunds: list[Refund]
    disputes: list[Dispute]


@dataclass(frozen=True)
class DeliveryAttempt:
    at: datetime | None
    status_code: int
    duration_ms: int
    error: str
    outcome: str


@dataclass(frozen=True)
class Delivery:
    id: str
    event_id: str
    event_type: str
    merchant_id: str
    url: str
    status: str
    payment_intent: str
    created: datetime | None
    attempts: list[DeliveryAttempt] = field(default_factory=list)


@dataclass(frozen=True)
class MoneyMovement:
    type: str
    id: str
    payment_intent: str
    merchant_id: str
    amount: int  # signed minor units
    currency: str  # uppercase ISO-4217
    psp: str
    psp_reference: str
    fee: int | None
    settled: datetime | None


@dataclass(frozen=True)
class DailyPsp:
    day: str
    psp: str
    attempted: int
    succeeded: int
    volume: dict[str, int]


@dataclass(frozen=True)
class PaymentStats:
    days: list[DailyPsp]
    declines: list[tuple[str, int]]


@dataclass(frozen=True)
class DailyRecovery:
    day: str
    paid_first_time: int
    declined: int
    recovered: int


@dataclass(frozen=True)
class Subscription:
    id: str
    merchant_id: str
    amount: int
    currency: str
    interval: str
    status: str
    payment_method: str
    current_period_end: datetime | None
    created: datetime | None


@dataclass(frozen=True)
class Renewal:
    id: str
    period_start: datetime | None
    period_end: datetime | None
    amount: int
    currency: str
    status: str
    attempt: int
    payment_intent: str


@dataclass(frozen=True)
class SubscriptionDetail:
    subscription: Subscription
    renewals: list[Renewal]
    retry_after_days: list[int]
    attempts_made: int
    next_attempt_at: datetime | None
    final_status: str
    timeline: list[AuditEntry]
    chain_verified: bool
    chain_problem: str


@dataclass(frozen=True)
class Mismatch:
    id: str
    psp: str
    kind: str
    state: str
    reference: str
    object_type: str
    payment_intent: str
    psp_amount: int
    ledger_amount: int
    psp_currency: str
    ledger_currency: str
    psp_status: str
    ledger_status: str
    found: datetime | None
    note: str = ""
    resolved_by: str = ""


@dataclass(frozen=True)
class DeadLetter:
    id: str
    queue: str
    job_id: str
    reason: str
    body: str
    status: str
    received: datetime | None


@dataclass(frozen=True)
class ApiKey:
    id: str
    livemode: bool
    last4: str
    created: datetime | None
    revoked: datetime | None


@dataclass(frozen=True)
class Merchant:
    id: str
    name: str
    psp_routing: list[str]
    api_keys: list[ApiKey]
    created: datetime | None


@dataclass(frozen=True)
class RolledKey:
    merchant_id: str
    livemode: bool
    secret_key: str  # shown once, never stored


@dataclass(frozen=True)
class SystemStatus:
    health: dict[str, str]  # service → SERVING, NOT_SERVING, or the error
    breakers: list[tuple[str, str]]  # (psp, closed | open | half-open)
    queues: list[tuple[str, str, float]]  # (queue, state, depth)
    outbox: list[tuple[str, float]]  # (service, oldest pending event's age in seconds)
    dependencies: list[tuple[str, str, bool]]  # (service, dependency, up)
    scheduler_leader: str  # the rebill process that leads, or ""
    unreachable: list[str]  # metrics endpoints that did not answer
