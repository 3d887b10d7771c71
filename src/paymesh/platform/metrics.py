"""Prometheus instruments shared by every service, created once. Names are the ones our
users already alert on; do not rename them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "gateway_requests_total",
    "gRPC requests handled, by service, method and status code.",
    ["service", "method", "code"],
)
# Request latency buckets: every target the SREs state is a bucket edge (p95 < 400 ms needs
# 0.4; 0.1, 0.25, 1 and 2.5 s are the others), so a quantile near a target is not a guess
# between two far-apart edges.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 1, 2.5, 5, 10)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time to handle a gRPC request, by service and method.",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)
DEPENDENCY_UP = Gauge(
    "paymesh_dependency_up",
    "1 when the dependency answered the last health probe, 0 otherwise.",
    ["service", "dependency"],
)
OUTBOX_PUBLISHED = Counter(
    "outbox_events_published_total",
    "Outbox events confirmed by RabbitMQ.",
    ["service"],
)
OUTBOX_RELAY_ERRORS = Counter(
    "outbox_relay_errors_total",
    "Outbox relay rounds that failed (broker unreachable, nack, database error).",
    ["service"],
)
OUTBOX_OLDEST_PENDING = Gauge(
    "outbox_oldest_pending_seconds",
    "Age of the oldest outbox event not yet confirmed by RabbitMQ (0 when none).",
    ["service"],
)
# A PSP's own failures and every call, counted where the HTTP call is made (the gateway's
# payment operations, the vault's card creation: operation `card`), so that
# sum(rate(psp_call_errors_total)) / sum(rate(psp_calls_total)) is the PSPs' error ratio.
PSP_CALLS = Counter(
    "psp_calls_total",
    "Calls to a PSP (each attempt of a retried operation is one call), whatever their answer.",
    ["psp", "operation"],
)
PSP_CALL_ERRORS = Counter(
    "psp_call_errors_total",
    "Calls a PSP failed: 5xx, timeouts, connection errors, unreadable answers. Never a "
    "decline or a refusal (those are answers: payments_declined_total).",
    ["psp", "operation", "reason"],
)
AUDIT_CHECKPOINT_AGE = Gauge(
    "audit_chain_head_checkpoint_age_seconds",
    "Seconds since the last complete round of signed checkpoints of an audit table's chain "
    "heads began (audit rows newer than that are not anchored yet). Reported only by the "
    "process that checkpoints the table.",
    ["table"],
)

# Key ages, for the 90-day rotation alert (prometheus/alerts.yml: KeyOld). Reported only for
# keys whose source says when they changed (mounted files, Secrets Manager; never env vars).
PSP_KEY_AGE = Gauge(
    "psp_key_age_seconds",
    "Seconds since the PSP API key in use was set (its file written, its secret version made).",
    ["psp"],
)
SERVICE_KEY_AGE = Gauge(
    "service_key_age_seconds",
    "Seconds since the signing key of a service identity was made (paymesh keys rotate).",
    ["identity"],
)
AUDIT_KEY_AGE = Gauge(
    "audit_key_age_seconds",
    "Seconds since the audit key that signs checkpoints was made (paymesh keys rotate-audit).",
)
