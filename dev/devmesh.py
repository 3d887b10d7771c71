"""Starts the whole mesh on one machine: localstripe, the four services and Envoy, in the
foreground; stops everything on Ctrl-C or SIGTERM. `make run` calls `main()`; the
integration tests use `Mesh` with their own database, vhost and free ports.

PostgreSQL: `DATABASE_URL` is the data path and may be a transaction-pooling pgbouncer;
`DATABASE_DIRECT_URL` (default: `DATABASE_URL`) goes straight to PostgreSQL for the leaders'
advisory locks, LISTEN and `paymesh migrate`. Both are checked before anything starts."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from backoffice.config import BackofficeSettings
from paymesh.platform.config import DEFAULT_DATABASE_URL, ServiceSettings
from paymesh.platform.roles import role_of
from paymesh_ops.services import ALL, BACKOFFICE

ROOT = Path(__file__).resolve().parents[1]
ENVOY_TEMPLATE = ROOT / "envoy" / "envoy.yaml"
DESCRIPTOR = ROOT / "build" / "paymesh.pb"
EDGE_FILTER = ROOT / "build" / "edge.lua"
BIN = Path(sys.executable).parent
_PR_SET_PDEATHSIG = 1
UPSTREAM_TLS_CONTEXT = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)
# `make run`'s gateway processes: one per two cores, since Envoy, PostgreSQL and the vault
# need the other half (on two cores a second process measured slower: 339 against 374
# authorizations/s, docs/performance.md). The tests' and benchmarks' meshes choose their own.
DEFAULT_GATEWAY_PROCESSES = max(1, (os.cpu_count() or 2) // 2)
# Gateway process n (n ≥ 2) of `make run` listens on GATEWAY_GRPC_PORT and GATEWAY_HTTP_PORT
# plus 10·(n−1): 50061 and 9111, 50071 and 9121, …
GATEWAY_PORT_STEP = 10


@dataclass
class Ports:
    envoy: int = 8080
    envoy_admin: int = 9901
    localstripe: int = 8420
    sandbox_psp: int = 8430
    rebill_worker: int = 9105  # the rebill worker's ops HTTP port (/metrics)
    backoffice: int = 8090  # the back office's web port (BACKOFFICE_PORT)
    grpc: dict[str, int] = field(
        default_factory=lambda: {
            "gateway": 50051,
            "vault": 50052,
            "rebill": 50053,
            "webhook": 50054,
        }
    )
    http: dict[str, int] = field(
        default_factory=lambda: {"gateway": 9101, "vault": 9102, "rebill": 9103, "webhook": 9104}
    )
    # (gRPC, ops HTTP) of each gateway process after the first, which has grpc/http["gateway"]
    more_gateways: list[tuple[int, int]] = field(default_factory=list)

    @property
    def gateways(self) -> list[tuple[int, int]]:
        """(gRPC, ops HTTP) of every gateway process, the first one's (port 50051) first."""
        return [(self.grpc["gateway"], self.http["gateway"]), *self.more_gateways]

    def ops_ports(self) -> list[int]:
        """The ops HTTP port of every service process."""
        return [
            *self.http.values(),
            *(http for _, http in self.more_gateways),
            self.rebill_worker,
        ]

    @classmethod
    def from_env(cls, env: dict[str, str], gateway_processes: int = 1) -> Ports:
        ports = cls()
        ports.envoy = int(env.get("ENVOY_PORT", ports.envoy))
        ports.envoy_admin = int(env.get("ENVOY_ADMIN_PORT", ports.envoy_admin))
        ports.localstripe = int(env.get("LOCALSTRIPE_PORT", ports.localstripe))
        ports.sandbox_psp = int(env.get("SANDBOX_PSP_PORT", ports.sandbox_psp))
        ports.rebill_worker = int(env.get("REBILL_WORKER_HTTP_PORT", ports.rebill_worker))
        ports.backoffice = int(env.get("BACKOFFICE_PORT", ports.backoffice))
        for name in ALL:
            prefix = name.upper()
            ports.grpc[name] = int(env.get(f"{prefix}_GRPC_PORT", ports.grpc[name]))
            ports.http[name] = int(env.get(f"{prefix}_HTTP_PORT", ports.http[name]))
        ports.more_gateways = [
            (
                ports.grpc["gateway"] + n * GATEWAY_PORT_STEP,
                ports.http["gateway"] + n * GATEWAY_PORT_STEP,
            )
            for n in range(1, gateway_processes)
        ]
        return ports

    @classmethod
    def free(cls, gateway_processes: int = 1) -> Ports:
        """Unused ports, so a test run never collides with `make run` or another run."""
        taken = free_ports(6 + 2 * len(ALL) + 2 * (gateway_processes - 1))
        ports = cls(
            envoy=taken[0],
            envoy_admin=taken[1],
            localstripe=taken[2],
            sandbox_psp=taken[3],
            rebill_worker=taken[4],
            backoffice=taken[5],
        )
        for i, name in enumerate(ALL):
            ports.grpc[name] = taken[6 + 2 * i]
            ports.http[name] = taken[7 + 2 * i]
        more = taken[6 + 2 * len(ALL) :]
        ports.more_gateways = list(zip(more[::2], more[1::2], strict=True))
        return ports

    def by_variable(self) -> list[tuple[str, int]]:
        """Every port of the mesh beside the variable that moves it."""
        named = [
            ("ENVOY_PORT", self.envoy),
            ("ENVOY_ADMIN_PORT", self.envoy_admin),
            ("LOCALSTRIPE_PORT", self.localstripe),
            ("SANDBOX_PSP_PORT", self.sandbox_psp),
            ("REBILL_WORKER_HTTP_PORT", self.rebill_worker),
            ("BACKOFFICE_PORT", self.backoffice),
        ]
        for name in ALL:
            named.append((f"{name.upper()}_GRPC_PORT", self.grpc[name]))
            named.append((f"{name.upper()}_HTTP_PORT", self.http[name]))
        for n, (grpc_port, http_port) in enumerate(self.more_gateways, 2):
            step = f"+ {GATEWAY_PORT_STEP * (n - 1)}, gateway process {n}"
            named.append((f"GATEWAY_GRPC_PORT {step}", grpc_port))
            named.append((f"GATEWAY_HTTP_PORT {step}", http_port))
        return named

    def service_env(self) -> dict[str, str]:
        env = {
            "LOCALSTRIPE_PORT": str(self.localstripe),
            "SANDBOX_PSP_PORT": str(self.sandbox_psp),
            "REBILL_WORKER_HTTP_PORT": str(self.rebill_worker),
            "SANDBOX_API_BASE": f"http://127.0.0.1:{self.sandbox_psp}",
            # Where the sandbox PSP sends its webhooks (through Envoy, as a real PSP would).
            "SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{self.envoy}/v1/psp/sandbox/webhooks",
        }
        for name in ALL:
            env[f"{name.upper()}_GRPC_PORT"] = str(self.grpc[name])
            env[f"{name.upper()}_HTTP_PORT"] = str(self.http[name])
            env[f"{name.upper()}_ADDR"] = f"127.0.0.1:{self.grpc[name]}"
        env["STRIPE_API_BASE"] = f"http://127.0.0.1:{self.localstripe}"
        env["BACKOFFICE_PORT"] = str(self.backoffice)
        env["BACKOFFICE_METRICS_URLS"] = ",".join(
            f"{name}=http://127.0.0.1:{port}/metrics" for name, port in self.metrics_targets()
        )
        return env

    def metrics_targets(self) -> list[tuple[str, int]]:
        """(process, ops HTTP port) of every service process: what the back office's System
        page reads."""
        targets = [(name, self.http[name]) for name in ALL]
        targets += [(f"gateway-{n}", http) for n, (_, http) in enumerate(self.more_gateways, 2)]
        return [*targets, ("rebill_worker", self.rebill_worker)]


def gateway_process_name(index: int) -> str:
    """`gateway` for the first gateway process (index 0), then `gateway-2`, `gateway-3`, …"""
    return "gateway" if index == 0 else f"gateway-{index + 1}"


def service_of(process_name: str) -> str:
    """The service a mesh process belongs to: `gateway` for `gateway-2`."""
    return process_name.split("-")[0]


def service_database_urls(env: dict[str, str]) -> dict[str, str]:
    """Each service connects as its own role (`paymesh migrate` made them, with trust
    authentication here): `<PREFIX>DATABASE_URL` is DATABASE_URL with the user
    `paymesh_<service>` and no password, unless the environment sets it already. Derived when
    a process starts, so a test that points DATABASE_URL elsewhere (a proxy, a private
    cluster) moves the services with it."""
    url = make_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    urls = {}
    settings_classes = {name: d.settings_class for name, d in ALL.items()}
    for name, settings_class in {**settings_classes, BACKOFFICE: BackofficeSettings}.items():
        variable = f"{settings_class.model_config.get('env_prefix', '')}DATABASE_URL"
        if not env.get(variable):
            as_role = url._replace(username=role_of(name), password=None)  # set() keeps a password
            urls[variable] = as_role.render_as_string(hide_password=False)
    return urls


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on right now. Every socket stays bound until all
    are picked: closed one by one, the kernel may hand the same port out twice, and two
    services of one mesh would then race for it."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def render_envoy_config(
    ports: Ports,
    descriptor: Path = DESCRIPTOR,
    tls_dir: Path | None = None,
    otlp_endpoint: str | None = None,
) -> str:
    """envoy/envoy.yaml with the given ports and an absolute descriptor path; with `tls_dir`
    (PAYMESH_TLS_DIR), Envoy calls and health-checks every service over mTLS; with
    `otlp_endpoint` (OTEL_EXPORTER_OTLP_ENDPOINT) its spans go there, without it Envoy
    traces nothing (as the services export nothing)."""
    config = yaml.safe_load(ENVOY_TEMPLATE.read_text())
    _point_tracing_at(config, otlp_endpoint)
    config["admin"]["address"]["socket_address"]["port_value"] = ports.envoy_admin
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = ports.envoy
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for http_filter in manager["http_filters"]:
        if http_filter["name"] == "envoy.filters.http.grpc_json_transcoder":
            http_filter["typed_config"]["proto_descriptor"] = str(descriptor)
        if http_filter["name"] == "envoy.filters.http.lua":
            http_filter["typed_config"]["default_source_code"]["filename"] = str(EDGE_FILTER)
    for cluster in config["static_resources"]["clusters"]:
        name = cluster["name"]
        if name == OTEL_CLUSTER:
            continue
        grpc_ports = (
            [grpc for grpc, _ in ports.gateways] if name == "gateway" else [ports.grpc[name]]
        )
        group = cluster["load_assignment"]["endpoints"][0]
        template = group["lb_endpoints"][0]
        group["lb_endpoints"] = [_endpoint_on(template, port) for port in grpc_ports]
        if tls_dir is not None:
            cluster["transport_socket"] = upstream_mtls(tls_dir.resolve(), cluster["name"])
    return yaml.safe_dump(config, sort_keys=False)


OTEL_CLUSTER = "otel_collector"


def _point_tracing_at(config: dict, otlp_endpoint: str | None) -> None:
    """Envoy's OTLP cluster on the endpoint's host and port, or no tracing at all."""
    clusters = config["static_resources"]["clusters"]
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    if not otlp_endpoint:
        manager["typed_config"].pop("tracing", None)
        clusters[:] = [c for c in clusters if c["name"] != OTEL_CLUSTER]
        return
    parts = urlsplit(otlp_endpoint if "//" in otlp_endpoint else f"http://{otlp_endpoint}")
    [collector] = [c for c in clusters if c["name"] == OTEL_CLUSTER]
    host = parts.hostname or "127.0.0.1"
    if not _is_ip(host):
        collector["type"] = "STRICT_DNS"  # STATIC clusters take IP addresses only
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    address["address"]["socket_address"] = {"address": host, "port_value": parts.port or 4317}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _endpoint_on(template: dict, port: int) -> dict:
    endpoint = copy.deepcopy(template)
    endpoint["endpoint"]["address"]["socket_address"]["port_value"] = port
    return endpoint


def upstream_mtls(tls_dir: Path, service: str) -> dict:
    """Envoy's side of mTLS towards `service`: its own client certificate, and the service's
    certificate checked against paymesh's CA and the service's name."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS_CONTEXT,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(tls_dir / "envoy.crt")},
                        "private_key": {"filename": str(tls_dir / "envoy.key")},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(tls_dir / "ca.crt")},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": service}}
                    ],
                },
            },
        },
    }


def _die_with_parent() -> None:
    # If the supervisor is killed outright, its children get SIGTERM instead of living on.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Mesh:
    """The processes of one mesh: started in order, stopped in reverse order."""

    env: dict[str, str]
    ports: Ports
    log_dir: Path | None = None  # None: inherit stdout/stderr (make run)
    # The back office starts only when asked (make run asks; a test mesh when its test does):
    # it holds PostgreSQL connections of its own.
    with_backoffice: bool = False
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _logs: list[IO] = field(default_factory=list)

    def start(self, with_psps: bool = True) -> None:
        """The PSP stand-ins (localstripe, the sandbox PSP), then the four services."""
        if with_psps:
            self.start_psp_stand_ins()
        for name, definition in ALL.items():
            if name == "gateway":
                self.start_gateways()
            else:
                self.spawn(name, [sys.executable, "-m", definition.package])
        self.spawn("rebill_worker", [sys.executable, "-m", "rebill_svc.worker"])

    def start_psp_stand_ins(self) -> None:
        """localstripe and the sandbox PSP."""
        # localstripe keeps its state in one fixed file (/tmp/localstripe.pickle) that
        # concurrent instances would corrupt: every instance starts empty instead. It runs
        # with Stripe's test-card declines (dev.localstripe_cards).
        self.spawn(
            "localstripe",
            [
                sys.executable,
                "-m",
                "dev.localstripe_cards",
                "--port",
                str(self.ports.localstripe),
                "--from-scratch",
            ],
        )
        self.spawn(
            "sandbox_psp",
            [
                sys.executable,
                "-m",
                "dev.sandbox_psp",
                "--port",
                str(self.ports.sandbox_psp),
            ],
        )

    def start_gateways(self) -> None:
        """One gateway process per port pair; Envoy balances over them. Each has its own gRPC
        port (no SO_REUSEPORT: Envoy keeps one HTTP/2 connection per upstream, which the
        kernel would hash to one process) and its own ops port for /metrics."""
        for index, (grpc_port, http_port) in enumerate(self.ports.gateways):
            env = {**self.env, "GATEWAY_GRPC_PORT": str(grpc_port)}
            env["GATEWAY_HTTP_PORT"] = str(http_port)
            name = gateway_process_name(index)
            self.spawn(name, [sys.executable, "-m", ALL["gateway"].package], env=env)

    def start_envoy(self) -> None:
        envoy_config = (self.log_dir or ROOT / "build") / "envoy.yaml"
        envoy_config.parent.mkdir(parents=True, exist_ok=True)
        tls_dir = self.env.get("PAYMESH_TLS_DIR")
        envoy_config.write_text(
            render_envoy_config(
                self.ports,
                tls_dir=Path(tls_dir) if tls_dir else None,
                otlp_endpoint=self.env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            )
        )
        self.spawn(
            "envoy",
            [
                str(BIN / "envoy"),
                "-c",
                str(envoy_config),
                "--concurrency",
                "1",
                "--log-level",
                "warn",
                # Access logs reach the terminal within a second, not ten.
                "--file-flush-interval-msec",
                "1000",
                "--base-id",
                str(self.ports.envoy),  # a second Envoy on this machine must not clash
            ],
        )

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        env = self.env if env is None else env
        env = {**env, **service_database_urls(env)}
        stdout: IO | None = None
        if self.log_dir is not None:
            stdout = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs.append(stdout)
        self.processes[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports.envoy}{path}"

    def wait_until(self, urls: list[str], timeout: float = 90.0) -> None:
        """Until every URL answers 200; raises if a process died or time ran out."""
        deadline = time.monotonic() + timeout
        pending = list(urls)
        while pending:
            dead = self.dead_process()
            if dead:
                raise RuntimeError(f"{dead} exited with code {self.processes[dead].returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready within {timeout:.0f} s: {', '.join(pending)}")
            pending = [url for url in pending if http_status(url) != 200]
            if pending:
                time.sleep(0.25)

    def start_all(self, timeout: float = 90.0) -> None:
        """Services first, Envoy once they are ready, then until Envoy's /readyz says 200."""
        self.start()
        self.wait_until(
            [f"http://127.0.0.1:{port}/readyz" for port in self.ports.ops_ports()], timeout
        )
        self.start_envoy()
        self.wait_until([self.url("/readyz")], timeout)
        if "localstripe" in self.processes:
            self.configure_stripe_webhooks()
        if self.with_backoffice:
            self.start_backoffice(timeout)

    def start_backoffice(self, timeout: float = 90.0) -> None:
        """`python -m backoffice` on ports.backoffice, until its sign-in page answers."""
        self.spawn(BACKOFFICE, [sys.executable, "-m", "backoffice"])
        self.wait_until([self.backoffice_url("/login")], timeout)

    def backoffice_url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports.backoffice}{path}"

    def configure_stripe_webhooks(self) -> None:
        """localstripe sends its signed webhooks (Stripe-Signature) to our Stripe endpoint,
        through Envoy, with the secret webhook_svc checks them with."""
        from webhook_svc.config import WebhookSettings

        secret = self.env.get("WEBHOOK_STRIPE_SECRET") or str(
            WebhookSettings.model_fields["stripe_secret"].default
        )
        body = json.dumps(
            {"url": self.url("/v1/psp/stripe/webhooks"), "secret": secret.split(",")[0]}
        ).encode()
        request = urllib.request.Request(  # noqa: S310 - our URL
            f"http://127.0.0.1:{self.ports.localstripe}/_config/webhooks/paymesh",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass

    def dead_process(self) -> str | None:
        return next((n for n, p in self.processes.items() if p.poll() is not None), None)

    def stop(self, name: str | None = None, grace: float = 15.0) -> None:
        names = [name] if name else list(reversed(self.processes))
        for each in names:
            process = self.processes[each]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for each in names:
            process = self.processes[each]
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if name is None:
            for log in self._logs:
                log.close()


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URL
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def ports_in_use(ports: Ports) -> list[tuple[str, int]]:
    """(variable, port) of every port of the mesh that something already listens on."""
    return [(variable, port) for variable, port in ports.by_variable() if not _bindable(port)]


def port_complaint(in_use: list[tuple[str, int]]) -> str:
    """One line: the first port in use, the variable that moves it, and how many more."""
    variable, port = in_use[0]
    more = f" (and {len(in_use) - 1} more of the mesh's ports)" if len(in_use) > 1 else ""
    return (
        f"port {port} ({variable}) is in use{more}: is paymesh already running? Stop it, or "
        f"move this one with {variable.split()[0]}=<another port>"
    )


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        # As the servers themselves bind: a port whose old connections linger is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 - a probe; Envoy listens on every interface
        except OSError:
            return False
    return True


def unreachable_dependencies(database_url: str, amqp_url: str | None) -> list[str]:
    """One line per unreachable dependency, saying how to start it."""
    import pika
    import psycopg
    from sqlalchemy.engine import make_url

    from paymesh.platform.amqp import connection_parameters

    problems = []
    db = make_url(database_url)
    try:
        admin = db.set(drivername="postgresql", database="postgres")
        psycopg.connect(admin.render_as_string(hide_password=False), connect_timeout=3).close()
    except psycopg.Error:
        problems.append(
            f"PostgreSQL is not reachable at {db.host}:{db.port or 5432} (DATABASE_URL); start it "
            "with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )
    if amqp_url is None:
        return problems
    params = connection_parameters(amqp_url)
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.AMQPError:
        where = ", ".join(f"{p.host}:{p.port}" for p in params)
        problems.append(
            f"RabbitMQ is not reachable at {where} (AMQP_URL); start it "
            "with: rabbitmq-server -detached"
        )
    return problems


class _StopRequested(Exception):
    pass


def _raise_stop(_signum, _frame) -> None:
    raise _StopRequested


def main() -> int:
    env = dict(os.environ)
    try:
        settings = ServiceSettings(grpc_port=0, http_port=0)
    except ValidationError as error:
        print("\n".join(e["msg"] for e in error.errors()), file=sys.stderr)
        return 1
    problems = unreachable_dependencies(settings.database_url, settings.amqp_url)
    if settings.session_database_url != settings.database_url:
        problems += unreachable_dependencies(settings.session_database_url, None)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    gateway_processes = env.get("PAYMESH_GATEWAY_PROCESSES", str(DEFAULT_GATEWAY_PROCESSES))
    if not gateway_processes.isdigit() or int(gateway_processes) < 1:
        print("PAYMESH_GATEWAY_PROCESSES must be 1 or more", file=sys.stderr)
        return 1
    ports = Ports.from_env(env, int(gateway_processes))
    in_use = ports_in_use(ports)
    if in_use:
        print(port_complaint(in_use), file=sys.stderr)
        return 1
    started = time.monotonic()
    # The vault's keys are checked first: a vault that cannot decrypt its cards never starts.
    steps = [["migrate"], ["keys", "init"], ["vault", "init-keyring"], ["vault", "check-keys"]]
    if settings.tls_dir:
        steps.append(["certs", "init"])
    for step in steps:
        done = subprocess.run(
            [str(BIN / "paymesh"), *step], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            print(f"paymesh {' '.join(step)} failed: {done.stderr.strip()}", file=sys.stderr)
            return 1
    env.update(ports.service_env())
    # The development profile: webhooks may go to receivers on this machine (production
    # refuses private and loopback destinations unless an operator admits them), and the back
    # office's cookies work over plain HTTP on loopback.
    env.setdefault("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    env.setdefault("BACKOFFICE_COOKIE_SECURE", "false")
    mesh = Mesh(env=env, ports=ports, with_backoffice=True)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    failed = False
    try:
        mesh.start_all()
        print_banner(ports, time.monotonic() - started, settings.tls_dir)
        while not mesh.dead_process():
            time.sleep(0.5)
        failed = True
        print(f"paymesh: {mesh.dead_process()} exited; stopping", file=sys.stderr, flush=True)
    except _StopRequested:
        pass
    except (RuntimeError, TimeoutError) as error:
        failed = True
        print(f"paymesh: {error}; stopping", file=sys.stderr, flush=True)
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        mesh.stop()
    print("paymesh: stopped", file=sys.stderr, flush=True)
    return 1 if failed else 0


def print_banner(ports: Ports, seconds: float, tls_dir: Path | None = None) -> None:
    grpcurl_tls = (
        f"-cacert {tls_dir}/ca.crt -cert {tls_dir}/ops.crt -key {tls_dir}/ops.key"
        if tls_dir
        else "-plaintext"
    )
    rows = [
        f"paymesh is ready ({seconds:.1f} s)",
        f"  REST (Envoy)   http://localhost:{ports.envoy}",
        f"  readiness      curl -s localhost:{ports.envoy}/readyz",
        f"  try            curl -s localhost:{ports.envoy}/v1/payment_intents/pi_123",
        f"  Envoy admin    http://127.0.0.1:{ports.envoy_admin}",
        f"back office: http://127.0.0.1:{ports.backoffice}",
        "  an operator    .venv/bin/paymesh operators create --email you@example.com --role admin",
    ]
    for name, definition in ALL.items():
        processes = ports.gateways if name == "gateway" else [(ports.grpc[name], ports.http[name])]
        for number, (grpc_port, http_port) in enumerate(processes, 1):
            label = definition.package if number == 1 else f"  process {number}"
            rows.append(
                f"  {label:<16} grpc localhost:{grpc_port}  "
                f"metrics http://localhost:{http_port}/metrics"
            )
    rows += [
        f"  rebill worker    metrics http://localhost:{ports.rebill_worker}/metrics",
        f"  localstripe    http://localhost:{ports.localstripe}",
        f"  sandbox PSP    http://localhost:{ports.sandbox_psp}   knobs: POST /_knobs",
        f"  ops            grpcurl {grpcurl_tls} localhost:{ports.grpc['gateway']} list",
        "  a merchant     .venv/bin/paymesh merchants create --name acme",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(rows), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
