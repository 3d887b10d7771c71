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
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge(
    "rebill_queue_depth",
    "Rebill jobs in a queue, from the jobs' states: ready (published, waiting for a worker) "
    "and unacked (held by a worker under its lease). The dead-letter queue: ready messages, "
    "from RabbitMQ. Every rebill_svc replica reports the same (aggregate with max).",
    ["queue", "state"],
)
WORKERS_ALIVE = Gauge(
    "rebill_workers_alive",
    "Rebill worker processes that beat their registry row within a lease (idle ones too). "
    "Every rebill_svc replica reports the same (aggregate with max).",
)
HEARTBEAT_AGE = Gauge(
    "rebill_worker_heartbeat_age_seconds",
    "On the scheduler leader: seconds since the stalest worker last beat, its registry row or "
    "a running job's lease (a dead or frozen worker shows here, also after its jobs were "
    "reclaimed). On a worker's port: since its own stalest held job's lease was extended.",
)
SCHEDULER_LEADER = Gauge(
    "rebill_scheduler_leader", "1 while this process is the active scheduler, else 0"
)
SCHEDULED = Counter(
    "rebill_scheduler_jobs_total", "Jobs the scheduler handed to the queues", ["kind"]
)
