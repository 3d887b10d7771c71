"""`make run` checks its dependencies first and says in one line what is down and how to
start it, instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dev.devmesh import unreachable_dependencies

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
