"""Private RabbitMQ nodes for fault tests (the machine's broker is shared by every test run,
so it is never stopped): one node, or three clustered on this machine.

Found by experiment on RabbitMQ 3.10 / Erlang 25 (Debian packages):
- /usr/sbin/rabbitmq-server and rabbitmqctl are wrappers that `su` to the `rabbitmq` user
  (as root; the node would then need directories and a cookie that user can read) or exit 1
  (as anyone else); the real scripts in /usr/lib/rabbitmq/bin run as the current user, and
  are the ones used. Elsewhere (generic tarball, Homebrew) the ones on PATH are the real
  scripts. Without either, `rabbitmq_bin()` is None and the tests skip.
- /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost) and /etc/rabbitmq/rabbitmq.conf
  (`listeners.tcp.local = 127.0.0.1:5672`, which would clash with the shared broker) are
  replaced by empty files of our own: RABBITMQ_CONF_ENV_FILE, RABBITMQ_CONFIG_FILE.
  RABBITMQ_ENABLED_PLUGINS_FILE holds `[].`, so no management plugin binds port 15672.
- Each node gets its own name (paymesh-test-<random>@localhost), AMQP port
  (RABBITMQ_NODE_PORT on RABBITMQ_NODE_IP_ADDRESS=127.0.0.1), distribution port
  (RABBITMQ_DIST_PORT, on loopback through RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS
  `-kernel inet_dist_use_interface {127,0,0,1}`), and data and log directories
  (RABBITMQ_MNESIA_BASE, RABBITMQ_LOG_BASE) under the test's tmp_path. It registers with
  the machine's epmd (4369), started by the shared broker or else by the node itself.
- HOME points into tmp_path for the node and for rabbitmqctl: Erlang reads the cookie from
  there (and creates one on first use). A cluster's nodes share one: the same
  `.erlang.cookie` (mode 0400) is written into each node's HOME before it starts.
- `rabbitmqctl await_startup` fails at once while the node is not yet registered with epmd:
  it is retried until the node answers (3 to 5 s to boot, also after a crash).
- A node joins a cluster with `stop_app`, `join_cluster <first node>`, `start_app`; the
  joins go one after the other (schema changes). Quorum queues declared once the three are
  clustered get a member on each (their initial group size is the cluster's); declared
  before, they would live on the first node alone.
- A crash is SIGKILL to the node's process group (the start script, beam.smp and its
  children); quorum queues keep every confirmed message through it. A clean stop is
  `rabbitmqctl stop`. Both may be followed by a restart on the same data directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dev.devmesh import free_ports

DEBIAN_RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_bin() -> Path | None:
    if (DEBIAN_RABBITMQ_BIN / "rabbitmq-server").exists():
        return DEBIAN_RABBITMQ_BIN
    found = shutil.which("rabbitmq-server")
    return Path(found).resolve().parent if found else None


class PrivateRabbit:
    """A RabbitMQ node of this test's own, in the foreground of a process group we own.
    `cookie` (the Erlang cookie) is shared by the nodes of a cluster; None lets Erlang make
    one of the node's own."""

    def __init__(
        self, workdir: Path, bin_dir: Path, name: str | None = None, cookie: str | None = None
    ):
        self.bin_dir = bin_dir
        self.node = f"{name or 'paymesh-test-' + secrets.token_hex(4)}@localhost"
        self.port, dist_port = free_ports(2)
        self.workdir = workdir
        for directory in ("home", "mnesia", "log"):
            (workdir / directory).mkdir(parents=True, exist_ok=True)
        if cookie is not None:
            cookie_file = workdir / "home" / ".erlang.cookie"
            cookie_file.write_text(cookie)
            cookie_file.chmod(0o400)
        (workdir / "rabbitmq-env.conf").write_text("")
        (workdir / "rabbitmq.conf").write_text("")
        (workdir / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(workdir / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
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

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin_dir / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def check(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl, failing with what it said unless it succeeded."""
        done = self.ctl(*args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node}: {done.stderr}")
        return done.stdout

    def launch(self) -> None:
        """Starts the node without waiting for it (see `wait_started`)."""
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

    def wait_started(self, timeout: float = 60) -> None:
        """Until the node listens for AMQP (a socket connect, cheap to ask again and again),
        then until `rabbitmqctl await_startup` agrees it has booted: each rabbitmqctl run
        is an Erlang start of its own, which on a busy machine takes the CPU the booting
        node needs, so it is not the thing polled."""
        process = self.process
        assert process is not None
        deadline = time.monotonic() + timeout

        def until(done: Callable[[], bool], interval: float, what: str) -> None:
            while not done():
                if process.poll() is not None:
                    raise RuntimeError(f"rabbitmq-server exited ({process.returncode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.node} did not {what} within {timeout} s")
                time.sleep(interval)

        until(self._listening, 0.1, "listen")
        until(self._answers_booted, 0.3, "start")

    def _answers_booted(self) -> bool:
        """`rabbitmqctl await_startup` succeeded; a run that hung (an overloaded machine)
        counts as not yet, for the caller's deadline to judge."""
        try:
            return self.ctl("await_startup", "--timeout", "10", timeout=30).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def start(self, timeout: float = 60) -> None:
        self.launch()
        self.wait_started(timeout)

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


@contextlib.contextmanager
def private_rabbit(workdir: Path, bin_dir: Path, wait: bool = True) -> Iterator[PrivateRabbit]:
    """One node, started, and stopped afterwards; with `wait=False` still booting (the caller
    does something else meanwhile, then `wait_started`)."""
    rabbit = PrivateRabbit(workdir, bin_dir)
    try:
        rabbit.launch()
        if wait:
            rabbit.wait_started()
        yield rabbit
    finally:
        rabbit.stop()


class RabbitCluster:
    """Nodes clustered on this machine, sharing an Erlang cookie; the first is the one the
    others joined."""

    def __init__(self, workdir: Path, bin_dir: Path, size: int = 3):
        cookie = secrets.token_hex(16).upper()
        prefix = f"paymesh-test-{secrets.token_hex(3)}"
        self.nodes = [
            PrivateRabbit(workdir / f"node-{n}", bin_dir, f"{prefix}-{n}", cookie)
            for n in range(size)
        ]

    def amqp_urls(self, first: int = 0) -> str:
        """AMQP_URL's list form: every node's address, from node `first` on, round."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(node.amqp_url for node in order)

    def start(self) -> None:
        """Boots every node at once, then joins the others to the first: their apps stopped
        together, joined one at a time, started together (each rabbitmqctl run costs an
        Erlang start, 1 to 4 s on a busy machine)."""
        for node in self.nodes:
            node.launch()
        seed, joining = self.nodes[0], self.nodes[1:]
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.wait_started(), self.nodes))
            list(pool.map(lambda node: node.check("stop_app"), joining))
            for node in joining:
                node.check("join_cluster", seed.node)
            list(pool.map(lambda node: node.check("start_app"), joining))

    def stop(self) -> None:
        """Every node killed: a test's cluster is thrown away with its directories, so a
        clean stop (seconds per node) buys nothing."""
        for node in self.nodes:
            if node.running:
                node.crash()

    def quorum_queues(self, vhost: str = "/") -> dict[str, tuple[str, list[str]]]:
        """Every queue's (leader, online members) as a running node sees them, from one
        `rabbitmqctl list_queues` (an Erlang start of seconds each)."""
        asker = next(node for node in self.nodes if node.running)
        listed = asker.check(
            "list_queues", "-p", vhost, "name", "leader", "online", "--no-table-headers", "-q"
        )
        queues = {}
        for line in listed.splitlines():
            fields = line.split("\t")
            online = fields[2].strip("[]").replace('"', "").replace(" ", "")
            queues[fields[0]] = (fields[1], [m for m in online.split(",") if m])
        return queues


@contextlib.contextmanager
def rabbit_cluster(workdir: Path, bin_dir: Path, size: int = 3) -> Iterator[RabbitCluster]:
    """Nodes clustered and running; every node stopped afterwards."""
    cluster = RabbitCluster(workdir, bin_dir, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
