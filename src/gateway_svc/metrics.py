"""gateway_svc's Prometheus instruments, created once. Names our users alert on."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Counted where the HTTP call is made: the gateway's operations here, the vault's cards there.
from paymesh.platform.metrics import LATENCY_BUCKETS, PSP_CALL_ERRORS, PSP_CALLS  # noqa: F401

PAYMENTS_INFLIGHT = Gauge(
    "payments_inflight_total",
    "Payment operations whose outcome is being decided now, by status: a PSP operation "
    "started and not settled (processing: an authorization; requires_capture: a capture or "
    "cancel; refund_pending: a refund), including unknown outcomes waiting for the recovery "
    "sweep. Intents waiting for the customer are not counted. Refreshed every sweep round.",
    ["status"],
)
PAYMENTS_DECLINED = Counter(
    "payments_declined_total",
    "Payment attempts declined (by the issuer through the PSP, or a card the PSP or vault "
    "refused), by PSP and decline code.",
    ["psp", "decline_code"],
)
RECOVERY_SWEEP_ACTIVE = Gauge(
    "payments_recovery_sweep_active",
    "1 in the one gateway process whose recovery sweep runs (it holds the sweep's lock), "
    "0 in the standbys.",
)
RECOVERY_SWEEP_ROUNDS = Counter(
    "payments_recovery_sweep_rounds_total",
    "Rounds of the recovery sweep completed in this process (counted only where it is active). "
    "Flat while the sweep is active means it is stuck or failing every round.",
)
PSP_REQUEST_DURATION = Histogram(
    "psp_request_duration_seconds",
    "Time of one PSP HTTP call, by operation.",
    ["psp", "operation"],
    buckets=LATENCY_BUCKETS,
)
PSP_CIRCUIT_STATE = Gauge(
    "psp_circuit_breaker_state",
    "Circuit breaker per PSP: 0 closed, 1 open (the PSP is skipped), 2 half-open (probing).",
    ["psp"],
)
PSP_FAILOVERS = Counter(
    "psp_failovers_total", "Authorizations moved on to the next PSP, by the PSP left.", ["psp"]
)
RECOVERED = Counter(
    "payments_recovered_total", "Intents stuck in processing resolved by the sweep.", ["outcome"]
)
CARD_TOKEN_LOOKUPS = Counter(
    "gateway_card_token_lookups_total",
    "Cards' PSP references asked for by charges: answered from memory (hit), from the vault "
    "(miss), or from the vault again because the card was revoked since it was remembered "
    "(revoked; such a lookup counted a hit first).",
    ["result"],
)
PSP_EVENTS = Counter(
    "gateway_psp_events_total",
    "PSP events (webhooks) by PSP, kind, outcome (applied, already_applied, ignored, "
    "retry_later) and reason.",
    ["psp", "kind", "outcome", "reason"],
)
RECONCILIATION_MISMATCHES = Counter(
    "reconciliation_mismatches_total",
    "Disagreements between a PSP and paymesh's ledger, by kind (missing_in_ledger, "
    "missing_at_psp, amount_mismatch, currency_mismatch, status_mismatch) and how they were "
    "found (reason: `reconciliation` for a new mismatch of a reconciliation run, counted once; "
    "else the reason a PSP webhook that contradicts the ledger was ignored).",
    ["psp", "kind", "reason"],
)
RECONCILIATION_LAST_SUCCESS = Gauge(
    "reconciliation_last_success_timestamp_seconds",
    "When the newest successful reconciliation run of a PSP ended (Unix time).",
    ["psp"],
)
RECONCILIATION_RECORDS_CHECKED = Counter(
    "reconciliation_records_checked_total",
    "PSP and ledger records compared by reconciliation runs.",
    ["psp"],
)
