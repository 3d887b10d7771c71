"""webhook_svc's Prometheus metrics for deliveries to merchants (the names the issue gives)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Delivery attempts to merchant endpoints by result: succeeded (2xx), failed (retried "
    "later), dead (no attempt left), gone (410: the endpoint is disabled), deferred (its "
    "circuit is open: not sent, not counted as an attempt)",
    ["result"],
)
DELIVERY_DURATION = Histogram(
    "webhook_delivery_duration_seconds",
    "One delivery request, from connecting to the endpoint's answer",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 1, 2.5, 5, 10, 15),
)
DELIVERY_LAG = Histogram(
    "webhook_delivery_lag_seconds",
    "From an event's creation to its successful delivery to an endpoint",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
PENDING = Gauge(
    "webhook_pending_deliveries",
    "Deliveries waiting to be sent or retried (the whole database's: every replica reports it)",
)
CIRCUIT_STATE = Gauge(
    "webhook_endpoint_circuit_state",
    "Each endpoint's circuit in this replica: 0 closed, 1 half-open, 2 open",
    ["endpoint"],
)
DEAD_LETTERS = Counter(
    "webhook_dead_letters_total", "Deliveries given up after their last attempt, or on 410"
)
EVENTS_RECEIVED = Counter(
    "webhook_events_received_total",
    "Domain events taken from RabbitMQ: new, duplicate (already received), unreadable",
    ["result"],
)
