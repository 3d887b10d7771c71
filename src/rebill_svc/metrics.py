"""rebill_svc's Prometheus metrics; the names are the ones users already alert on."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_PROCESSED = Counter(
    "rebill_jobs_processed_total", "Charge attempts whose outcome was recorded", ["outcome"]
)
JOBS_FAILED = Counter(
    "rebill_jobs_failed_total",
    "Jobs that did not end in a successful charge, or a run that could not finish",
    ["reason"],
)
JOB_DURATION = Histogram(
    "rebill_job_duration_seconds",
    "One job run: the charge through the gateway and recording its outcome",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("rebill_queue_depth", "Messages ready in a rebill queue", ["queue"])
HEARTBEAT_AGE = Gauge(
    "rebill_worker_heartbeat_age_seconds",
    "Seconds since the stalest running job's worker last beat (a dead worker shows here)",
)
SCHEDULER_LEADER = Gauge(
    "rebill_scheduler_leader", "1 while this process is the active scheduler, else 0"
)
SCHEDULED = Counter(
    "rebill_scheduler_jobs_total", "Jobs the scheduler handed to the queues", ["kind"]
)
