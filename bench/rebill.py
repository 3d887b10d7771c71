"""Rebill benchmark: how fast due renewals are charged, end to end, through the scheduler,
the outbox, RabbitMQ, the workers, the gateway and the sandbox PSP.

    .venv/bin/python bench/rebill.py --subscriptions 10000 --workers 1,2,4 --latency-ms 0,50

For each (workers, PSP latency) pair, on a mesh and database of its own: `--subscriptions`
monthly subscriptions are written straight into the database on a fresh test clock (their
first period paid), the clock is advanced past their renewal, and the run ends when every
renewal is charged. Prints renewals/s (from the advance to the last charge) and, per
renewal, the time from "due" (the advance) to "charged" (its outcome committed):
p50/p95/p99, and when the scheduler had created the last job (scheduler-bound when that is
close to the run's end), how many of the PSP's webhooks had come in by the end (the rest
were not paid for), and, from the advance to the last charge, the CPU milliseconds per
renewal of every process and the hops per renewal (gRPC calls served, messages published,
PSP calls, database transactions; see harness.hop_counts). The machine's echo reference
runs first, and each rate is also shown as a ratio to it (see bench/harness.py)."""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from harness import (  # noqa: E402
    cpu_per_request,
    cpu_seconds,
    hop_counts,
    hops_per_request,
    machine_reference,
    running_mesh,
)

START = datetime(2030, 1, 1, tzinfo=UTC)
RENEWAL = datetime(2030, 2, 1, tzinfo=UTC)


def post(url: str, body: dict, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(  # noqa: S310 - our own mesh
        url, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{url}: {error.code} {error.read()[:300]!r}") from None


def rest(bench, path: str, body: dict) -> dict:
    return post(bench.mesh.url(path), body, {"authorization": f"Bearer {bench.secret_key}"})


def write_subscriptions(bench, clock: str, payment_method: str, count: int) -> None:
    rows = [
        (
            "sub_" + secrets.token_hex(12),
            bench.merchant_id,
            payment_method,
            1000 + i % 9000,
            clock,
        )
        for i in range(count)
    ]
    with psycopg.connect(bench.infra.database_url) as db, db.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO rebill.subscriptions (id, merchant_id, livemode, payment_method, amount,"
            " currency, interval, interval_count, billing_cycle_anchor, test_clock, metadata,"
            " status, period_number, current_period_start, current_period_end)"
            " VALUES (%s, %s, false, %s, %s, 'usd', 'month', 1, %s, %s, '{}', 'active', 0, %s, %s)",
            [(i, m, pm, amount, START, c, START, RENEWAL) for i, m, pm, amount, c in rows],
        )


_CHARGED = (
    " FROM rebill.rebill_attempts a JOIN rebill.rebill_jobs j ON j.id = a.job_id"
    " WHERE j.test_clock = %s AND a.outcome = 'succeeded'"
)


def charged_count(db: psycopg.Connection, clock: str) -> int:
    """How many renewals on `clock` are charged. The poll must stay cheap, or it takes the
    database's CPU from the run it measures: the full count (a join of every attempt, tens of
    ms at 10,000) runs only once no job on the clock is open (an index lookup)."""
    open_jobs = db.execute(
        "SELECT count(*) FROM rebill.rebill_jobs WHERE test_clock = %s"
        " AND status IN ('queued', 'running', 'scheduled')",  # rebill_jobs_clock_idx
        (clock,),
    ).fetchone()[0]
    if open_jobs:
        return 0
    return db.execute("SELECT count(*)" + _CHARGED, (clock,)).fetchone()[0]


def charge_times(db: psycopg.Connection, clock: str) -> list[float]:
    """Each charged renewal's outcome time on `clock` (epoch s)."""
    rows = db.execute("SELECT extract(epoch FROM a.at)" + _CHARGED, (clock,)).fetchall()
    return [float(row[0]) for row in rows]


def last_scheduled(db: psycopg.Connection, clock: str) -> float:
    """When the scheduler created the last job on `clock` (epoch s)."""
    return float(
        db.execute(
            "SELECT extract(epoch FROM max(created_at)) FROM rebill.rebill_jobs"
            " WHERE test_clock = %s",
            (clock,),
        ).fetchone()[0]
    )


def run_once(
    bench, workers: int, latency_ms: int, count: int, timeout: float, echo_rate: float
) -> dict:
    mesh = bench.mesh
    extra = [f"rebill_worker-{n}" for n in range(2, workers + 1)]
    for name in extra:
        mesh.spawn(
            name,
            [sys.executable, "-m", "rebill_svc.worker"],
            env={**mesh.env, "REBILL_WORKER_HTTP_PORT": "0"},
        )
    sandbox = f"http://127.0.0.1:{mesh.ports.sandbox_psp}/_knobs"
    post(sandbox, {"latency_ms": latency_ms})
    try:
        time.sleep(2)  # the extra workers connect and consume
        clock = rest(bench, "/v1/test_clocks", {"frozen_time": START.isoformat()})["id"]
        card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
        payment_method = rest(bench, "/v1/payment_methods", {"card": card})["id"]
        write_subscriptions(bench, clock, payment_method, count)
        hops_before, cpu_before = hop_counts(bench), cpu_seconds(mesh)
        due = time.time()
        rest(
            bench,
            f"/v1/test_clocks/{clock}/advance",
            {"frozen_time": (RENEWAL + timedelta(seconds=1)).isoformat()},
        )
        deadline = time.monotonic() + timeout
        done = 0
        # One connection for the whole wait: the machine's PostgreSQL is shared, and a new
        # connection per poll fails whenever other test runs hold its connection slots.
        with psycopg.connect(bench.infra.database_url, autocommit=True) as db:
            while done < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{done}/{count} renewals charged in {timeout:.0f} s")
                time.sleep(0.5)
                done = charged_count(db, clock)
            cpu = cpu_per_request(cpu_before, cpu_seconds(mesh), count, "renewal")
            hops = hops_per_request(hops_before, hop_counts(bench), count, "renewal")
            times = charge_times(db, clock)
            scheduled = last_scheduled(db, clock) - due
            # The PSP announces every capture by webhook: a run whose webhooks are still
            # queued at the PSP when it ends has not paid for them.
            webhooks = db.execute("SELECT count(*) FROM webhook.psp_inbox").fetchone()[0]
    finally:
        post(sandbox, {"latency_ms": 0})
        for name in extra:
            mesh.stop(name)
    elapsed = max(times) - due
    waits = sorted((t - due) * 1000 for t in times)
    q = statistics.quantiles(waits, n=100)
    return {
        "bench": "rebill",
        "workers": workers,
        "psp_latency_ms": latency_ms,
        "renewals": count,
        "seconds": round(elapsed, 2),
        "all_scheduled_after_seconds": round(scheduled, 2),
        "psp_webhooks_in_by_the_end": webhooks,
        "per_second": round(count / elapsed, 1),
        "echo_ratio": round(count / elapsed / echo_rate, 4),
        "due_to_charged_p50_ms": round(q[49]),
        "due_to_charged_p95_ms": round(q[94]),
        "due_to_charged_p99_ms": round(q[98]),
        "cpu": cpu,
        "hops": hops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=10000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--latency-ms", default="0,50")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    echo_rate = machine_reference()
    for latency in (int(x) for x in args.latency_ms.split(",")):
        for workers in (int(x) for x in args.workers.split(",")):
            # A fresh mesh and database for each row: a row run after another found the
            # tables thousands of renewals bigger, and the rows did not compare.
            with running_mesh() as bench:
                row = run_once(bench, workers, latency, args.subscriptions, args.timeout, echo_rate)
                print(
                    f"rebill  workers={workers}  psp {latency:>3} ms  {row['per_second']:>7.1f}"
                    f" renewals/s ({row['echo_ratio']:.4f}× echo)  ({row['renewals']} in"
                    f" {row['seconds']:.1f} s, all scheduled"
                    f" after {row['all_scheduled_after_seconds']:.1f} s, PSP webhooks in by the"
                    f" end {row['psp_webhooks_in_by_the_end']})  due→charged"
                    f" p50 {row['due_to_charged_p50_ms'] / 1000:.1f} s"
                    f"  p95 {row['due_to_charged_p95_ms'] / 1000:.1f} s"
                    f"  p99 {row['due_to_charged_p99_ms'] / 1000:.1f} s"
                    f"\n{row['cpu']}\n{row['hops']}",
                    flush=True,
                )
                if args.json_out:
                    with open(args.json_out, "a") as out:
                        out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
