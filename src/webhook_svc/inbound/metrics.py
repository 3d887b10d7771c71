"""webhook_svc's Prometheus metrics for the PSPs' webhooks it takes in."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LAG = Histogram(
    "webhook_lag_seconds",
    "From a PSP event's creation (at the PSP) to its being applied to the payment",
    ["psp"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
PSP_EVENTS = Counter(
    "webhook_psp_events_total",
    "PSP webhook requests by PSP and outcome: applied, already_applied, ignored, duplicate "
    "(received before), deferred (answered 503: sent again later), refused (bad, missing or "
    "stale signature, unreadable event)",
    ["psp", "outcome"],
)
