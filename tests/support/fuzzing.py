"""What the REST and gRPC fuzzers share: their budget, the findings they collect (every
distinct failure, its smallest input kept) and the scan of the mesh's logs for card numbers.

Budget and seed come from the environment, so CI is bounded and reproducible and a developer
can run longer:

    PAYMESH_FUZZ_EXAMPLES=500 PAYMESH_FUZZ_SEED=random .venv/bin/pytest -m fuzz
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, seed, settings

from tests.support.http import call
from tests.support.pan import leaked
from tests.support.waiting import wait_for_text

# localstripe plays the PSP (it is meant to hold card numbers) and moto plays AWS KMS.
NOT_OURS = {"localstripe.log", "moto.log"}


def examples(default: int) -> int:
    """Examples per route or method: PAYMESH_FUZZ_EXAMPLES, else the CI default."""
    return int(os.environ.get("PAYMESH_FUZZ_EXAMPLES", default))


def fuzz_settings(max_examples: int) -> Callable:
    """Hypothesis settings of a fuzzer: derandomized (the same inputs every run) unless
    PAYMESH_FUZZ_SEED is an integer or `random`; no shrinking (the fuzzers collect every
    failure and keep the smallest input of each themselves) and no example database."""
    chosen = os.environ.get("PAYMESH_FUZZ_SEED", "")
    configured = settings(
        max_examples=max_examples,
        derandomize=not chosen,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )

    def apply(test: Callable) -> Callable:
        test = configured(test)
        if chosen.isdigit():
            test = seed(int(chosen))(test)
        return test

    return apply


@dataclass
class Finding:
    where: str  # "POST /v1/payment_intents" or "paymesh.gateway.v1.GatewayService/GetRefund"
    category: str  # "5xx", "not the error envelope", "INTERNAL", "PAN echoed", …
    status: str  # HTTP status or gRPC code
    detail: str  # what was wrong, and the answer
    example: dict[str, Any]  # the request, as sent
    count: int = 1

    def size(self) -> int:
        return len(json.dumps(self.example, default=str))


@dataclass
class Findings:
    """Distinct failures: one per (where, category, status, signature), the smallest input of
    each kept."""

    by_key: dict[tuple, Finding] = field(default_factory=dict)

    def add(self, finding: Finding, signature: str) -> None:
        key = (finding.where, finding.category, finding.status, signature)
        known = self.by_key.get(key)
        if known is None:
            self.by_key[key] = finding
            return
        known.count += 1
        if finding.size() < known.size():
            finding.count = known.count
            self.by_key[key] = finding

    def __bool__(self) -> bool:
        return bool(self.by_key)

    def report(self) -> str:
        lines = [f"{len(self.by_key)} distinct failures:"]
        ordered = sorted(self.by_key.values(), key=lambda f: (f.category, f.where, f.status))
        category = None
        for finding in ordered:
            if finding.category != category:
                category = finding.category
                lines.append(f"\n== {category}")
            example = json.dumps(finding.example, default=str, ensure_ascii=True)
            lines.append(
                f"- {finding.where} → {finding.status} (×{finding.count}): {finding.detail}\n"
                f"    input: {shorten(example, 600)}"
            )
        return "\n".join(lines)

    def dump(self, path: Path) -> None:
        path.write_text(
            json.dumps([f.__dict__ for f in self.by_key.values()], default=str, indent=1)
        )


def signature_of(text: str) -> str:
    """A message with its variable parts (numbers, ids, quoted values) blanked, so that one
    defect met with many inputs counts once."""
    text = text.split(": ", 1)[0] if ": " in text[:80] else text
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "…", text)
    text = re.sub(r"\b[a-z]+_[A-Za-z0-9]{6,}\b", "<id>", text)
    return re.sub(r"\d+", "N", text)[:160]


def shorten(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


class LogWatch:
    """The mesh's log files from a starting point on: the fuzzers' requests are in there."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.start = {path: path.stat().st_size for path in self._files()}

    def _files(self) -> list[Path]:
        return [p for p in sorted(self.log_dir.glob("*.log")) if p.name not in NOT_OURS]

    def new_lines(self) -> list[tuple[str, str]]:
        """(file name, line) of every line written since the start."""
        lines = []
        for path in self._files():
            with path.open("rb") as log:
                log.seek(self.start.get(path, 0))
                text = log.read().decode("utf-8", errors="replace")
            lines += [(path.name, line) for line in text.splitlines() if line.strip()]
        return lines

    def scan(self, mesh, sent: dict[str, list[dict]], findings: Findings) -> None:
        """A finding per log line that holds a card number a fuzzer sent (`sent`: the number's
        digits → the requests that carried it), once Envoy's access log has every request
        made so far: a request made now is in it (Envoy flushes its buffer whole, in order)."""
        marker = f"/v1/log-flushed-{uuid.uuid4().hex}"
        call(mesh.url(marker))
        wait_for_text(self.log_dir / "envoy.log", marker, timeout=15)
        pans = set(sent)
        for name, line in self.new_lines():
            for pan in leaked(pans, line):
                where = "Envoy access log" if name == "envoy.log" else f"log of {name[:-4]}"
                holder = _field_holding(line, pan)
                findings.add(
                    Finding(
                        where=where,
                        category="PAN in a log line",
                        status="-",
                        detail=f"{holder}: {shorten(line, 400)}",
                        example=_sender(sent[pan], line),
                    ),
                    signature=f"{holder} {_event_of(line)}",
                )


def _sender(requests: list[dict], line: str) -> dict:
    """The request a log line is most likely about: one whose request id or path it shows."""
    line = urllib.parse.unquote(line)
    for request in requests:
        marks = [str(request.get(k, "")) for k in ("path", "method_name")]
        marks.append(str((request.get("headers") or {}).get("X-Request-Id", "")))
        if any(mark and mark in line for mark in marks):
            return request
    return requests[0]


def _event_of(line: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return ""
    if not isinstance(record, dict):
        return ""
    return (
        str(record.get("event", "")) + " " + str(record.get("grpc_method", record.get("rpc", "")))
    )


def _field_holding(line: str, pan: str) -> str:
    """The JSON field of a log line that holds the number (for grouping), else `text`."""
    try:
        record = json.loads(line)
    except ValueError:
        return "text"
    if isinstance(record, dict):
        for key, value in record.items():
            if leaked({pan}, json.dumps(value, ensure_ascii=False)):
                return f"field {key}"
    return "text"
