"""A process's /metrics as tests read it: the sum of the samples of one metric whose labels
include the given ones (0 when none)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import call


def metric(port: int, name: str, **labels: str) -> float:
    text = call(f"http://127.0.0.1:{port}/metrics").body
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
