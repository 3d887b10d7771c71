"""`make run` checks its dependencies first and says in one line what is down and how to
start it, instead of a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys

import pytest

from dev.devmesh import Ports, http_status, unreachable_dependencies
from rebill_svc.config import RebillSettings
from tests.support.mesh import base_env, migrated_infra

pytestmark = pytest.mark.integration

DEAD_PORT = 1  # nothing listens on tcpmux


def test_reachable_dependencies_raise_no_complaint(infra):
    assert unreachable_dependencies(infra.database_url, infra.amqp_url) == []


def test_each_unreachable_dependency_gets_one_line_naming_it_and_the_fix(infra):
    problems = unreachable_dependencies(
        f"postgresql://postgres@127.0.0.1:{DEAD_PORT}/x",
        f"amqp://guest:guest@127.0.0.1:{DEAD_PORT}/%2F",
    )

    assert len(problems) == 2
    assert problems[0].startswith(f"PostgreSQL is not reachable at 127.0.0.1:{DEAD_PORT}")
    assert "pg_ctlcluster" in problems[0]
    assert problems[1].startswith(f"RabbitMQ is not reachable at 127.0.0.1:{DEAD_PORT}")
    assert "rabbitmq-server -detached" in problems[1]


def test_the_run_command_exits_with_that_line_and_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "dev.devmesh"],
        env={**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{DEAD_PORT}/x"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("PostgreSQL is not reachable")
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture
def held_port():
    """A port this test listens on, as a first `make run` or worker would."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_a_second_run_names_the_port_in_use_and_its_variable_in_one_line(infra, held_port):
    result = subprocess.run(
        [sys.executable, "-m", "dev.devmesh"],
        env=base_env(infra, **Ports.free().service_env(), ENVOY_PORT=str(held_port)),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.startswith(f"port {held_port} (ENVOY_PORT) is in use"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout


def _worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rebill_svc.worker"],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_worker_whose_port_was_set_and_is_taken_names_it_in_one_line(infra, held_port):
    env = base_env(infra, REBILL_WORKER_HTTP_PORT=str(held_port))
    worker = _worker(env)
    output, _ = worker.communicate(timeout=60)

    assert worker.returncode == 1
    assert f"port {held_port} (REBILL_WORKER_HTTP_PORT) is in use" in output, output
    assert "Traceback" not in output


def test_another_worker_takes_a_free_ops_port_when_none_was_set(infra):
    default = RebillSettings.model_fields["worker_http_port"].default
    with contextlib.ExitStack() as stack, migrated_infra("paymesh_worker_ports") as own:
        # The first worker's port: held here, unless something on this machine holds it.
        held = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):
            held.bind(("127.0.0.1", default))
            held.listen()
        env = base_env(own)
        env.pop("REBILL_WORKER_HTTP_PORT", None)
        worker = _worker(env)
        try:
            started = _first_line_with(worker, "rebill_worker_started")
            port = json.loads(started)["http_port"]
            assert port not in (None, default)
            assert http_status(f"http://127.0.0.1:{port}/healthz") == 200
        finally:
            worker.terminate()
            worker.communicate(timeout=30)


def _first_line_with(process: subprocess.Popen, event: str) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if f'"{event}"' in line:
            return line
    raise AssertionError(f"exited with {process.wait()} before logging {event}")
