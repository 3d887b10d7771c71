"""The repo's alert rules and Grafana dashboards against a real Prometheus scraping the
session's mesh every second: HighPSPErrorRate stays quiet through a normal day (declines
included) and goes pending when the sandbox PSP fails every authorization; every dashboard
panel's query evaluates, and all but the few listed return data after some traffic."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import cards
from tests.support.payments import pay, post
from tests.support.prometheus import running_prometheus
from tests.support.rebill import advance, get, new_clock, subscribe
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
# What Grafana puts in place of its variables; $__rate_interval is at least 4 scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Panels whose queries may return nothing after this module's traffic, and why.
MAY_BE_EMPTY = {
    "PSP webhook lag p95": "the sandbox's webhooks for these payments may not have come yet",
    "Merchant webhook delivery lag p95": "this module registers no merchant endpoint",
    "Merchant webhook deliveries by result": "this module registers no merchant endpoint",
    "Recovery sweep resolutions": "no payment here is left in doubt for the sweep",
    "Reconciliation mismatches found": "a clean period finds none",
}
ERROR_RATIO = (
    "sum by (psp) (rate(psp_call_errors_total[5m])) / sum by (psp) (rate(psp_calls_total[5m]))"
)


@pytest.fixture(scope="module")
def prometheus(mesh, tmp_path_factory):
    with running_prometheus(mesh.ports, tmp_path_factory.mktemp("prometheus")) as running:
        yield running


def calls_seen(prometheus, psp: str) -> float:
    return prometheus.value(f'sum(psp_calls_total{{psp="{psp}"}})') or 0.0


def test_every_alert_rule_loads_and_evaluates_without_error(prometheus):
    health = wait_until(
        lambda: (h := prometheus.rule_health()) and "unknown" not in h.values() and h,
        timeout=30,
    )
    assert health == {name: "ok" for name in health}
    assert "HighPSPErrorRate" in health


def test_normal_traffic_with_declines_leaves_high_psp_error_rate_inactive(
    prometheus, mesh, merchant
):
    # Rounds of a payment and a decline, each round scraped before the next: a counter that
    # declines moved would show a rate (a burst before a new series' first scrape would not).
    for _ in range(3):
        before = calls_seen(prometheus, "sandbox")
        assert pay(mesh, merchant).body["status"] == "succeeded"
        declined = pay(mesh, merchant, cards.VISA_DECLINE)
        assert declined.body["status"] == "requires_payment_method", declined.body
        # Prometheus has the sandbox's calls: a quiet alert means a low ratio, not no data.
        wait_until(
            lambda b=before: calls_seen(prometheus, "sandbox") >= b + 2, timeout=30, interval=0.5
        )
    # ...and once every target was scraped twice more and the rule evaluated after that, the
    # ratio is under 1 % and the alert inactive.
    traffic_ended = time.time()
    wait_until(lambda: prometheus.scrapes_since(traffic_ended) >= 2, timeout=30, interval=0.2)
    scraped = time.time()
    wait_until(
        lambda: prometheus.evaluated_since("HighPSPErrorRate", scraped), timeout=30, interval=0.2
    )
    assert prometheus.query(f"{ERROR_RATIO} > 0.01") == []
    assert prometheus.alert_states("HighPSPErrorRate") == {}


def test_a_sandbox_failing_every_authorization_sends_high_psp_error_rate_pending(
    prometheus, mesh, merchant, knobs
):
    knobs(error_rate=1, operations=["authorize"])

    def pay_while_failing():
        # A 503, or another PSP's success: the sandbox failed either way. Payments go on
        # past the breaker's cool-down, so its half-open probes fail too: a burst of
        # failures before the first scrape of a new counter series is no rate at all.
        pay(mesh, merchant)
        return prometheus.value('sum(rate(psp_call_errors_total{psp="sandbox"}[5m]))')

    # The failures are counted (psp_call_errors_total exists today)...
    wait_until(pay_while_failing, timeout=60, interval=0.5)
    # ...and the ratio the alert computes crosses 1 %: pending, firing only after 10 minutes.
    states = wait_until(
        lambda: prometheus.alert_states("HighPSPErrorRate"), timeout=60, interval=0.5
    )
    assert list(states.values()) == ["pending"], states
    [labels] = states
    assert "('psp', 'sandbox')" in labels and "('severity', 'critical')" in labels


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found += panels(panel) if panel.get("type") == "row" and "panels" in panel else [panel]
    return [panel for panel in found if panel.get("type") != "row"]


def rendered(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert not re.search(r"\$\w", expr), f"a Grafana variable this test does not fill: {expr}"
    return expr


def renewals_with_a_soft_decline(mesh, merchant, knobs) -> None:
    """A subscription on a test clock whose first two charges are soft-declined: a worker
    runs its dunning retries (one declined, one paid)."""
    start = datetime(2027, 6, 1, tzinfo=UTC)
    clock = new_clock(mesh, merchant, start)
    knobs(soft_declines={"14301": 2})  # an amount of this module's own
    created = subscribe(mesh, merchant, 14301, test_clock=clock)
    assert created.body["status"] == "past_due", created.body
    advance(mesh, merchant, clock, start + timedelta(days=4))
    paid = get(mesh, merchant, f"/v1/subscriptions/{created.body['id']}").body
    assert paid["status"] == "active", paid


def test_every_dashboard_panel_evaluates_and_most_return_data(prometheus, mesh, merchant, knobs):
    # Traffic: renewals, payments, a decline, a refund, and a moment of sandbox failures.
    renewals_with_a_soft_decline(mesh, merchant, knobs)
    paid = pay(mesh, merchant).body
    pay(mesh, merchant, cards.VISA_DECLINE)
    assert post(mesh, merchant, "/v1/refunds", {"payment_intent": paid["id"]}).status == 200
    knobs(error_rate=1, operations=["authorize"])
    pay(mesh, merchant)
    refunds = 'sum(gateway_requests_total{method="CreateRefund"})'
    wait_until(lambda: prometheus.value(refunds), timeout=30, interval=0.5)
    # Two more scrapes of every target: a rate needs two samples of each new series.
    traffic_ended = time.time()
    wait_until(lambda: prometheus.scrapes_since(traffic_ended) >= 2, timeout=30, interval=0.2)

    assert DASHBOARDS
    empty, queried = {}, 0
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())):
            for target in panel["targets"]:
                queried += 1
                result = prometheus.query(rendered(target["expr"]))  # asserts it evaluates
                # A quantile of no observations is NaN: a panel with nothing to show.
                if all(math.isnan(float(sample["value"][1])) for sample in result):
                    empty.setdefault(panel["title"], []).append(target["expr"])
    unexpected = {title: exprs for title, exprs in empty.items() if title not in MAY_BE_EMPTY}
    assert not unexpected, f"panels with no data: {unexpected}"
    assert len(empty) <= len(MAY_BE_EMPTY) < queried / 3
