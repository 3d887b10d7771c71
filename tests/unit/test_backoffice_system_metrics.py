"""The System page's figures from the services' own Prometheus text (the metric names of
gateway_svc/metrics.py, rebill_svc/metrics.py and the kit's), as their /metrics serve it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from backoffice.mesh import summarize_metrics


def exposition(*gauges: tuple[str, list[str], list[tuple[list[str], float]]]) -> str:
    registry = CollectorRegistry()
    for name, labels, samples in gauges:
        gauge = Gauge(name, name, labels, registry=registry)
        for values, value in samples:
            (gauge.labels(*values) if labels else gauge).set(value)
    return generate_latest(registry).decode()


def test_breakers_queues_outbox_dependencies_and_the_leader_are_read_from_metrics():
    gateway = exposition(
        ("psp_circuit_breaker_state", ["psp"], [(["sandbox"], 0), (["stripe"], 1)]),
        ("outbox_oldest_pending_seconds", ["service"], [(["gateway"], 2.5)]),
        ("paymesh_dependency_up", ["service", "dependency"], [(["gateway", "postgres"], 1)]),
    )
    rebill = exposition(
        ("rebill_queue_depth", ["queue", "state"], [(["rebill.monthly", "ready"], 3)]),
        ("rebill_scheduler_leader", [], [([], 1)]),
        ("paymesh_dependency_up", ["service", "dependency"], [(["rebill", "rabbitmq"], 0)]),
    )
    other_rebill = exposition(
        ("rebill_queue_depth", ["queue", "state"], [(["rebill.monthly", "ready"], 4)]),
        ("rebill_scheduler_leader", [], [([], 0)]),
    )

    status = summarize_metrics(
        {"gateway": "SERVING"},
        {"gateway": gateway, "rebill": rebill, "rebill-2": other_rebill},
        ["webhook (http://127.0.0.1:9104/metrics)"],
    )

    assert status.breakers == [("sandbox", "closed"), ("stripe", "open")]
    assert status.queues == [("rebill.monthly", "ready", 4.0)]  # replicas: the largest
    assert status.outbox == [("gateway", 2.5)]
    assert status.dependencies == [("gateway", "postgres", True), ("rebill", "rabbitmq", False)]
    assert status.scheduler_leader == "rebill"
    assert status.unreachable == ["webhook (http://127.0.0.1:9104/metrics)"]
    assert status.health == {"gateway": "SERVING"}
