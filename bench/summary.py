"""The one table `make bench` ends with: issue 9's rows, each with its rate, p50, p99, ratio to
the machine's echo reference and errors, from the JSON lines the benchmarks wrote.

    .venv/bin/python bench/summary.py build/bench.jsonl
    .venv/bin/python bench/summary.py --run bench/vault.py --concurrency 1,16,32

The benchmarks write those lines through `record` (their `--json-out FILE`, or the
`BENCH_JSON_OUT` environment variable): one JSON object per printed row, appended. `--run`
runs a benchmark that does not call `record` itself and records every row it prints."""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (the summary's row, the benchmark row it reads: name and concurrency, the figure it leads with)
ROWS = [
    ("authorize, c=32", "authorize via Envoy REST", 32),
    ("authorize, c=1", "authorize via Envoy REST", 1),
    ("authorize as merchants send it, c=32", "authorize mixed via Envoy REST", 32),
    ("authorize as merchants send it, c=1", "authorize mixed via Envoy REST", 1),
    ("tokenize, c=32", "tokenize via Envoy REST", 32),
    ("GET an intent, c=32", "GET intent via Envoy REST", 32),
]


@cache
def _source_state() -> dict[str, object]:
    """The commit measured, and how many files of the code under test (src/, envoy/) differed
    from it in the working tree."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return run.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src", "envoy").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": len(dirty)}


def record(
    result, cpu: str | None = None, path: str | None = None, gateways: int | None = None
) -> None:
    """Prints a benchmark row (and its CPU line, if any) and, when `path` or `BENCH_JSON_OUT`
    names a file, appends the row to it as one JSON line. `gateways`: the gateway processes
    the mesh ran."""
    print(result.row(), flush=True)
    if cpu:
        print(cpu, flush=True)
    _append(result, cpu, path or os.environ.get("BENCH_JSON_OUT"), gateways)


def _append(result, cpu: str | None, path: str | None, gateways: int | None) -> None:
    import harness  # the benchmarks' own module, already on their path

    if not path:
        return
    latencies = result.latencies_ms
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    rate = result.requests / result.seconds
    echo = harness.reference_rate
    line = {
        "script": Path(sys.argv[0]).name,
        "name": result.name,
        "concurrency": result.concurrency,
        "requests": result.requests,
        "errors": result.errors,
        "seconds": round(result.seconds, 3),
        "rate": round(rate, 1),
        "p50_ms": round(q[49], 2),
        "p95_ms": round(q[94], 2),
        "p99_ms": round(q[98], 2),
        "echo_rate": round(echo, 1) if echo else None,
        "ratio_to_echo": round(rate / echo, 4) if echo else None,
        "cpu": cpu.strip() if cpu else None,
        "gateway_processes": gateways,
        **_source_state(),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as out:
        out.write(json.dumps(line) + "\n")


def table(lines: list[dict]) -> str:
    """Issue 9's rows as one Markdown table; the last measurement of a row wins."""
    found = {(line["name"], line["concurrency"]): line for line in lines}
    out = [
        "| path (Envoy REST) | rate | p50 | p99 | ratio to echo | errors |",
        "|---|---|---|---|---|---|",
    ]
    for label, name, concurrency in ROWS:
        line = found.get((name, concurrency))
        if line is None:
            out.append(f"| {label} | not measured | | | | |")
            continue
        ratio = f"{line['ratio_to_echo']:.3f}" if line.get("ratio_to_echo") else "–"
        out.append(
            f"| {label} | {line['rate']:,.0f}/s | {line['p50_ms']:.1f} ms"
            f" | {line['p99_ms']:.1f} ms | {ratio} | {line['errors']} |"
        )
    echoes = sorted({line["echo_rate"] for line in lines if line.get("echo_rate")})
    if echoes:
        out.append("")
        spread = f"{echoes[0]:,.0f}" if len(echoes) == 1 else f"{echoes[0]:,.0f}–{echoes[-1]:,.0f}"
        out.append(f"Echo reference (grpc.aio, c=32), measured by each script: {spread} calls/s.")
    commits = ", ".join(sorted({str(line.get("commit")) for line in lines}))
    dirty = max((line.get("dirty") or 0 for line in lines), default=0)
    gateways = sorted(
        {str(line["gateway_processes"]) for line in lines if line.get("gateway_processes")}
    )
    note = f"Measured at commit {commits}"
    if gateways:
        note += f" with {' or '.join(gateways)} gateway process(es) behind Envoy"
    if dirty:
        note += f", with up to {dirty} uncommitted changed files under src/ or envoy/"
    out.append(note + ".")
    return "\n".join(out)


def run_recording(script: str, argv: list[str]) -> None:
    """Runs a benchmark script as `__main__`, appending every row it prints (its
    `Result.row()`s) to `BENCH_JSON_OUT`."""
    import harness

    printed = harness.Result.row

    def row(result) -> str:
        text = printed(result)
        if not result.name.startswith("machine reference"):
            _append(result, None, os.environ.get("BENCH_JSON_OUT"), None)
        return text

    harness.Result.row = row
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


def main() -> None:
    if sys.argv[1:2] == ["--run"] and len(sys.argv) > 2:
        run_recording(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("jsonl", help="the file the benchmarks appended their rows to")
    args = parser.parse_args()
    try:
        text = Path(args.jsonl).read_text()
    except FileNotFoundError:
        sys.exit(f"{args.jsonl}: no benchmark rows (run the benchmarks with --json-out)")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    print()
    print("## make bench summary")
    print()
    print(table(lines))


if __name__ == "__main__":
    main()
