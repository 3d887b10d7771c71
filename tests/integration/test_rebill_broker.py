"""rebill against a misbehaving broker: a RabbitMQ node crashed and restarted while renewals
flow loses no job and charges no period twice; poison messages land in `rebill.dead` without
stopping their queue, and operators retry or discard them through RebillAdminService.

Each test runs a mesh of its own (own database, own ports, DB_POOL_SIZE=4) with
REBILL_REQUEUE_AFTER_SECONDS far beyond the test: the scheduler's safety net (re-publishing a
job queued too long) never fires, so a job whose message the broker lost stays unsettled and
the test fails instead of being rescued.

The private RabbitMQ node (the machine's broker is shared by every test run, so it is never
restarted): found by experiment on RabbitMQ 3.10 / Erlang 25 (Debian packages):
- /usr/sbin/rabbitmq-server and rabbitmqctl are wrappers that `su` to the `rabbitmq` user
  (as root) or refuse (as anyone else); the real scripts are in /usr/lib/rabbitmq/bin, and
  those run as the current user. Elsewhere (generic tarball, Homebrew) the ones on PATH are
  the real scripts.
- /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost) and /etc/rabbitmq/rabbitmq.conf
  (`listeners.tcp.local = 127.0.0.1:5672`, which would clash with the shared broker) are
  replaced by empty files of our own: RABBITMQ_CONF_ENV_FILE, RABBITMQ_CONFIG_FILE.
  RABBITMQ_ENABLED_PLUGINS_FILE holds `[].`, so no management plugin binds port 15672.
- The node gets its own name (paymesh-test-<random>@localhost), AMQP port
  (RABBITMQ_NODE_PORT on RABBITMQ_NODE_IP_ADDRESS=127.0.0.1), distribution port
  (RABBITMQ_DIST_PORT, on loopback), and data and log directories (RABBITMQ_MNESIA_BASE,
  RABBITMQ_LOG_BASE) under the test's tmp_path. It registers with the machine's epmd (4369),
  started by the shared broker or else by the node itself.
- HOME points into tmp_path for the node and for rabbitmqctl: Erlang creates the cookie
  there on first use, so the node needs no ~/.erlang.cookie and shares no secret.
- `rabbitmqctl await_startup` fails at once while the node is not yet registered with epmd:
  it is retried until the node answers (about 3 s to boot, also after a crash).
- A crash is SIGKILL to the node's process group (the start script, beam.smp and its
  children); quorum queues keep every confirmed message through it. A clean stop is
  `rabbitmqctl stop`. Both are followed by a restart on the same data directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from paymesh.devinfra import Infra, create_infra, drop_infra
from paymesh.devmesh import Mesh, Ports, _free_port
from tests.conftest import base_env, create_merchant, paymesh, started_mesh
from tests.integration.test_payments import post
from tests.integration.test_rebill import iso, new_clock
from tests.integration.test_vault import tokenize
from tests.support.http import call
from tests.support.psp import sandbox
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.conftest import TestMerchant

pytestmark = pytest.mark.integration

DEBIAN_RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_bin() -> Path | None:
    if (DEBIAN_RABBITMQ_BIN / "rabbitmq-server").exists():
        return DEBIAN_RABBITMQ_BIN
    found = shutil.which("rabbitmq-server")
    return Path(found).resolve().parent if found else None


class PrivateRabbit:
    """A RabbitMQ node of this test's own, in the foreground of a process group we own."""

    def __init__(self, workdir: Path, bin_dir: Path):
        self.bin_dir = bin_dir
        self.node = f"paymesh-test-{secrets.token_hex(4)}@localhost"
        self.port = _free_port()
        self.workdir = workdir
        for name in ("home", "mnesia", "log"):
            (workdir / name).mkdir(parents=True, exist_ok=True)
        (workdir / "rabbitmq-env.conf").write_text("")
        (workdir / "rabbitmq.conf").write_text("")
        (workdir / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(workdir / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        }
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin_dir / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, timeout: float = 60) -> None:
        self.starts += 1
        log = open(self.workdir / f"server-{self.starts}.out", "ab")  # noqa: SIM115
        with log:
            self.process = subprocess.Popen(
                [str(self.bin_dir / "rabbitmq-server")],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while self.ctl("await_startup", "--timeout", "10").returncode != 0:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited ({self.process.returncode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.node} did not start within {timeout} s")
            time.sleep(0.3)

    def crash(self) -> None:
        """SIGKILL to the node and everything it started: no goodbye to anyone."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        """A clean stop (`rabbitmqctl stop`); killed if it does not go."""
        if self.process is None or self.process.poll() is not None:
            return
        self.ctl("stop", timeout=60)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.crash()
        # The start script is gone; anything left in its group (erl_child_setup) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def private_rabbit(tmp_path) -> Iterator[PrivateRabbit]:
    bin_dir = rabbitmq_bin()
    if bin_dir is None:
        pytest.skip("no rabbitmq-server on this machine to run a private node")
    rabbit = PrivateRabbit(tmp_path / "rabbit", bin_dir)
    try:
        rabbit.start()
        yield rabbit
    finally:
        rabbit.stop()


@contextlib.contextmanager
def own_mesh(log_dir: Path, **overrides: str) -> Iterator[tuple[Mesh, Infra, TestMerchant]]:
    """A whole mesh with a database of its own; jobs queued too long are not re-published."""
    own = create_infra("paymesh_rebill_broker")
    ports = Ports.free()
    env = base_env(
        own,
        **ports.service_env(),
        DB_POOL_SIZE="4",
        REBILL_WORKER_PREFETCH="8",
        REBILL_REQUEUE_AFTER_SECONDS="3600",
        **overrides,
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        paymesh("migrate", env=env)
        merchant = create_merchant(own, "broker")
        with started_mesh(env, ports, log_dir) as mesh:
            yield mesh, own, merchant
    finally:
        drop_infra(own)


def sql(infra: Infra, statement: str, *params) -> list[tuple]:
    with psycopg.connect(infra.database_url, autocommit=True) as connection:
        return connection.execute(statement, params).fetchall()


def job_counts(infra: Infra, clock: str) -> dict[str, int]:
    rows = sql(
        infra,
        "SELECT status, count(*) FROM rebill.rebill_jobs WHERE test_clock = %s GROUP BY status",
        clock,
    )
    return dict(rows)


def clock_status(mesh, merchant, clock: str) -> str | None:
    """The clock's status through Envoy; None while the API does not answer (the broker is
    down and Envoy may have taken the services out)."""
    response = call(mesh.url(f"/v1/test_clocks/{clock}"), "GET", merchant.auth())
    return response.body["status"] if response.status == 200 else None


SUBSCRIPTIONS = 200
DAYS = 4
FIRST_AMOUNT = 6000


@pytest.mark.timeout(900)
def test_a_broker_crash_and_a_restart_mid_run_lose_no_job_and_charge_no_period_twice(
    infra, private_rabbit, tmp_path
):
    with own_mesh(tmp_path / "mesh", AMQP_URL=private_rabbit.amqp_url) as (mesh, own, merchant):
        start = datetime(2031, 5, 1, 8, tzinfo=UTC)
        clock = new_clock(mesh, merchant, start)
        token = tokenize(mesh, merchant).body["id"]
        amounts = [FIRST_AMOUNT + i for i in range(SUBSCRIPTIONS)]
        for amount in amounts:
            body = {
                "payment_method": token,
                "amount": amount,
                "currency": "usd",
                "interval": "day",
                "test_clock": clock,
            }
            created = post(mesh, merchant, "/v1/subscriptions", body)
            assert created.status == 200, created.body
            assert created.body["status"] == "active"
        renewals = SUBSCRIPTIONS * DAYS
        total = SUBSCRIPTIONS + renewals  # the first periods were charged at creation

        began = time.monotonic()
        advanced = post(
            mesh,
            merchant,
            f"/v1/test_clocks/{clock}/advance",
            {"frozen_time": iso(start + timedelta(days=DAYS))},
        )
        assert advanced.status == 200, advanced.body

        def succeeded() -> int:
            return job_counts(own, clock).get("succeeded", 0)

        # Crash the node once a quarter of the renewals went through, with jobs in flight.
        wait_until(lambda: succeeded() >= SUBSCRIPTIONS + renewals // 4, timeout=120, interval=0.1)
        at_crash = job_counts(own, clock)
        private_rabbit.crash()
        time.sleep(3)  # workers finish what they hold; new jobs wait in the outbox
        private_rabbit.start()
        # And a clean stop once more than half went through.
        wait_until(lambda: succeeded() >= SUBSCRIPTIONS + renewals // 2, timeout=180, interval=0.1)
        at_stop = job_counts(own, clock)
        private_rabbit.stop()
        time.sleep(3)
        private_rabbit.start()

        try:
            wait_until(lambda: clock_status(mesh, merchant, clock) == "ready", 300, 0.5)
        except TimeoutError:
            pytest.fail(f"the clock never became ready; jobs by status: {job_counts(own, clock)}")
        took = time.monotonic() - began
        print(
            f"{renewals} renewals in {took:.1f} s; at the crash {at_crash}, at the stop {at_stop}"
        )

        assert mesh.dead_process() is None, f"{mesh.dead_process()} exited"
        # Both interruptions came mid-run: renewals were unsettled each time.
        assert at_crash.get("succeeded", 0) < total
        assert at_stop.get("succeeded", 0) < total
        assert job_counts(own, clock) == {"succeeded": total}
        # One attempt per job, and it succeeded.
        attempts = sql(
            own,
            "SELECT a.attempt, a.outcome, count(*) FROM rebill.rebill_attempts a"
            " JOIN rebill.rebill_jobs j ON j.id = a.job_id WHERE j.test_clock = %s"
            " GROUP BY a.attempt, a.outcome",
            clock,
        )
        assert attempts == [(1, "succeeded", total)]
        # Every period charged exactly once at the PSP: each subscription has its amount.
        charged: dict[int, int] = {}
        for charge in sandbox(mesh, "/v1/charges")["data"]:
            charged[charge["amount"]] = charged.get(charge["amount"], 0) + 1
        assert charged == dict.fromkeys(amounts, 1 + DAYS)
        assert sql(own, "SELECT count(*) FROM rebill.dead_letters") == [(0,)]
