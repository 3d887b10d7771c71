"""Subscriptions and test clocks as a merchant drives them over REST."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg
import pytest

from tests.support import cards
from tests.support.http import call
from tests.support.payments import post
from tests.support.psp import sandbox
from tests.support.vault import tokenize
from tests.support.waiting import wait_until


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def get(mesh, merchant, path):
    return call(mesh.url(path), "GET", merchant.auth())


def charges_of(mesh, amount: int) -> list[dict]:
    """The sandbox's charges of an amount. The session's tests share one sandbox ledger, so
    each rebill module bills amounts of its own (test_payment_properties draws 100–5,000)."""
    return [c for c in sandbox(mesh, "/v1/charges")["data"] if c["amount"] == amount]


def subscribe(mesh, merchant, amount: int, number=cards.VISA, **fields):
    token = tokenize(mesh, merchant, number).body["id"]
    body = {"payment_method": token, "amount": amount, "currency": "usd", "interval": "month"}
    return post(mesh, merchant, "/v1/subscriptions", {**body, **fields})


def new_clock(mesh, merchant, at: datetime) -> str:
    response = post(mesh, merchant, "/v1/test_clocks", {"frozen_time": iso(at)})
    assert response.status == 200, response.body
    return response.body["id"]


def advance(mesh, merchant, clock: str, to: datetime, timeout: float = 120) -> dict:
    response = post(mesh, merchant, f"/v1/test_clocks/{clock}/advance", {"frozen_time": iso(to)})
    assert response.status == 200, response.body
    return wait_until(
        lambda: (
            (c := get(mesh, merchant, f"/v1/test_clocks/{clock}").body)["status"] == "ready" and c
        ),
        timeout=timeout,
        interval=0.2,
    )


def rebills(mesh, merchant, subscription: str) -> list[dict]:
    found, offset = [], 0
    while True:
        response = get(
            mesh, merchant, f"/v1/subscriptions/{subscription}/rebills?limit=100&offset={offset}"
        )
        assert response.status == 200, response.body
        page = response.body
        found += page["data"]
        if not page["has_more"]:
            return found
        offset += 100


def job_counts(database_url: str, clock: str) -> dict[str, int]:
    """A clock's rebill jobs by status."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT status, count(*) FROM rebill.rebill_jobs WHERE test_clock = %s GROUP BY status",
            (clock,),
        ).fetchall()
    return dict(rows)


class Progress:
    """Waits for a condition on a clock's jobs while they keep moving: fails once nothing
    changed for `stall` seconds (a lost message leaves its job queued for good), or a mesh
    process exited."""

    def __init__(self, mesh, database_url: str, clock: str, stall: float = 60):
        self._mesh, self._database_url, self._clock, self._stall = mesh, database_url, clock, stall

    def wait(self, condition, interval: float = 0.1) -> dict[str, int]:
        last, moved = None, time.monotonic()
        while True:
            counts = job_counts(self._database_url, self._clock)
            if condition(counts):
                return counts
            dead = self._mesh.dead_process()
            assert dead is None, f"{dead} exited (code {self._mesh.processes[dead].returncode})"
            if counts != last:
                last, moved = counts, time.monotonic()
            elif time.monotonic() - moved > self._stall:
                pytest.fail(f"no job moved for {self._stall:.0f} s; jobs by status: {counts}")
            time.sleep(interval)
