"""A real Prometheus (Debian's package; `make test` fetches it) scraping a running mesh every
second with the repo's alert rules, evaluated every second: what an SRE's Prometheus sees."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from dev.devmesh import Ports, free_ports
from tests.support.http import call
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "prometheus" / "alerts.yml"
FETCHED = ROOT / "build" / "prometheus" / "usr" / "bin" / "prometheus"


def prometheus_binary() -> str:
    found = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus") or str(FETCHED)
    if not Path(found).is_file():
        pytest.fail(f"no prometheus at {found}: `make test` (or `make alerts`) fetches it")
    return found


def scrape_jobs(ports: Ports) -> dict[str, list[str]]:
    """Job name -> targets, named as prometheus/prometheus.yml names them."""
    jobs = {name: [f"127.0.0.1:{ports.http[name]}"] for name in ("vault", "rebill", "webhook")}
    jobs["gateway"] = [f"127.0.0.1:{http}" for _, http in ports.gateways]
    jobs["rebill-worker"] = [f"127.0.0.1:{ports.rebill_worker}"]
    return jobs


def config(ports: Ports) -> dict:
    scrapes = [
        {"job_name": job, "static_configs": [{"targets": targets}]}
        for job, targets in scrape_jobs(ports).items()
    ]
    scrapes.append(
        {
            "job_name": "envoy",
            "metrics_path": "/stats/prometheus",
            "static_configs": [{"targets": [f"127.0.0.1:{ports.envoy_admin}"]}],
        }
    )
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": scrapes,
    }


@dataclass(frozen=True)
class Prometheus:
    url: str

    def _get(self, path: str, **params: str):
        response = call(f"{self.url}{path}?{urllib.parse.urlencode(params)}")
        assert response.status == 200, (path, params, response.body)
        assert response.body["status"] == "success", response.body
        return response.body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector (or scalar, as one sample) `expr` evaluates to now."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] == "matrix":
            return [{"metric": s["metric"], "value": s["values"][-1]} for s in data["result"]]
        return data["result"]

    def value(self, expr: str) -> float | None:
        """The one sample of `expr` (None when it has none)."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def alert_states(self, name: str) -> dict[str, str]:
        """The state (pending, firing) of each active alert `name`, by its labels."""
        return {
            str(sorted(alert["labels"].items())): alert["state"]
            for alert in self._get("/api/v1/alerts")["alerts"]
            if alert["labels"]["alertname"] == name
        }

    def scrapes_since(self, moment: float) -> int:
        """The fewest scrapes any target had since `moment` (a `time.time()`)."""
        window_ms = int((time.time() - moment) * 1000)
        if window_ms <= 0:
            return 0
        return int(self.value(f"min(count_over_time(up[{window_ms}ms]))") or 0)

    def evaluated_since(self, rule_name: str, moment: float) -> bool:
        """Whether the rule `rule_name` was evaluated after `moment` (a `time.time()`)."""
        [last] = [
            rule["lastEvaluation"]
            for group in self._get("/api/v1/rules")["groups"]
            for rule in group["rules"]
            if rule["name"] == rule_name
        ]
        # RFC 3339 with nanoseconds: datetime takes microseconds at most.
        evaluated = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", last))
        return evaluated.timestamp() > moment

    def rule_health(self) -> dict[str, str]:
        """Each alert rule's health (ok, err, unknown) and last error, as loaded."""
        return {
            rule["name"]: ": ".join(filter(None, (rule["health"], rule.get("lastError"))))
            for group in self._get("/api/v1/rules")["groups"]
            for rule in group["rules"]
        }


@contextlib.contextmanager
def running_prometheus(ports: Ports, directory: Path) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, stopped (and its data dropped) afterwards; yields
    once every target has been scraped."""
    [port] = free_ports(1)
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config(ports)))
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our binary, our arguments
            [
                prometheus_binary(),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: _answers(f"{prometheus.url}/-/ready"), timeout=30, interval=0.2)
        jobs = config(ports)["scrape_configs"]
        targets = sum(len(job["static_configs"][0]["targets"]) for job in jobs)
        wait_until(lambda: prometheus.value("count(up == 1)") == targets, timeout=30, interval=0.5)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        return call(url).status == 200
    except OSError:
        return False
