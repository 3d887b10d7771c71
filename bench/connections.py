"""PostgreSQL connections a mesh holds, per process: after a little traffic (a few concurrent
payments and tokenizations, so the pools have grown) and again once it has been idle.

    .venv/bin/python bench/connections.py [--idle-seconds 70] [--gateway-processes N]
        [--pgbouncer POOL]

--pgbouncer: DATABASE_URL through Debian's pgbouncer in transaction mode with POOL server
connections (DATABASE_DIRECT_URL straight to PostgreSQL, for the session connections).

Each backend is attributed to the mesh process that owns its client socket (the backend's
client port, looked up in /proc), so the count needs no cooperation from the code; the
application_name column shows what the process calls the connection. Not a timed benchmark:
the figures are counts, the same on any machine."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from harness import DEFAULT_GATEWAY_PROCESSES, KeepAliveHttp, running_mesh  # noqa: E402

APPROVED_CARD = "4242424242424242"


def socket_owners(pids: dict[int, str], server_port: int = 5432) -> dict[int, str]:
    """Local TCP port → the name of the process (among `pids`) whose socket to PostgreSQL
    (`server_port`) it is."""
    inode_owner = {}
    for pid, name in pids.items():
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inode_owner[target[8:-1]] = name
        except OSError:
            continue
    owners = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            to_server = int(fields[2].rsplit(":", 1)[1], 16) == server_port
            if to_server and fields[9] in inode_owner:
                owners[int(fields[1].rsplit(":", 1)[1], 16)] = inode_owner[fields[9]]
    return owners


def count(bench, others: dict[int, str] | None = None) -> list[tuple[str, str, int]]:
    """(process, application_name, connections) of every backend of the mesh's database."""
    pids = {process.pid: name for name, process in bench.mesh.processes.items()}
    pids.update(others or {})
    with psycopg.connect(bench.infra.database_url, autocommit=True) as db:
        own = db.execute("SELECT pg_backend_pid()").fetchone()[0]
        rows = db.execute(
            "SELECT client_port, application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> %s",
            (own,),
        ).fetchall()
    owners = socket_owners(pids)
    counted = Counter((owners.get(port, "other"), name or "") for port, name in rows)
    return sorted((process, name, n) for (process, name), n in counted.items())


def show(title: str, rows: list[tuple[str, str, int]]) -> None:
    print(f"\n{title}: {sum(n for _, _, n in rows)} connections")
    per_process = Counter()
    for process, _, n in rows:
        per_process[process] += n
    for process, n in sorted(per_process.items()):
        names = ", ".join(f"{a or '-'}: {c}" for p, a, c in rows if p == process)
        print(f"  {process:<16} {n:>3}   ({names})")


async def traffic(bench, payments: int = 24, in_flight: int = 8) -> None:
    """Concurrent tokenizations and confirmed payments, enough to grow every pool."""
    port = bench.mesh.ports.envoy
    card = {"number": APPROVED_CARD, "exp_month": 12, "exp_year": datetime.now(UTC).year + 2}
    queue = list(range(payments))

    async def one_client() -> None:
        http = KeepAliveHttp(port, {"Authorization": f"Bearer {bench.secret_key}"})
        while queue:
            queue.pop()
            body = json.dumps({"card": {**card, "cvc": "123"}}).encode()
            status, answer = await http.request("POST", "/v1/payment_methods", body)
            assert status == 200, answer
            token = json.loads(answer)["id"]
            intent = {"amount": 1000, "currency": "usd", "payment_method": token, "confirm": True}
            status, answer = await http.request(
                "POST", "/v1/payment_intents", json.dumps(intent).encode()
            )
            assert status == 200, answer

    await asyncio.gather(*(one_client() for _ in range(in_flight)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-seconds", type=float, default=70.0)
    parser.add_argument("--gateway-processes", type=int, default=DEFAULT_GATEWAY_PROCESSES)
    parser.add_argument("--pgbouncer", type=int, metavar="POOL")
    arguments = parser.parse_args()
    with contextlib.ExitStack() as stack:
        env_of, others = None, {}
        if arguments.pgbouncer:
            from tests.support.pgbouncer import running_pgbouncer

            bouncer = stack.enter_context(running_pgbouncer(arguments.pgbouncer))
            others = {int((bouncer.directory / "pgbouncer.pid").read_text()): "pgbouncer"}

            def env_of(infra):
                return {
                    "DATABASE_URL": bouncer.url(infra.database_url),
                    "DATABASE_DIRECT_URL": infra.database_url,
                }

        bench = stack.enter_context(running_mesh(arguments.gateway_processes, env_of=env_of))
        time.sleep(3)
        show("started, no traffic yet", count(bench, others))
        asyncio.run(traffic(bench))
        show("right after traffic", count(bench, others))
        time.sleep(arguments.idle_seconds)
        show(f"idle for {arguments.idle_seconds:.0f} s", count(bench, others))


if __name__ == "__main__":
    main()
