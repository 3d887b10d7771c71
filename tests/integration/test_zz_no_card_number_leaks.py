"""Runs last (hence the name): after everything above tokenized, rejected, provisioned and
logged, not one test card number is readable in the database (pg_dump of every schema, text
and bytea), in any service log or in Envoy's access log."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support import cards

pytestmark = pytest.mark.integration

# localstripe plays the PSP (it is meant to hold card numbers) and moto plays AWS KMS.
NOT_OURS = {"localstripe.log", "moto.log"}


def forms(number: str) -> list[str]:
    """The number as text, grouped in fours, and hex-encoded as a bytea would dump it."""
    grouped = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return [number, grouped, number.encode().hex()]


def test_no_test_card_number_is_stored_or_logged_in_clear(mesh, infra, tmp_path_factory):
    url = make_url(infra.database_url)
    dump = subprocess.run(
        ["pg_dump", "-h", url.host, "-p", str(url.port), "-U", url.username, url.database],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    logs = {
        path: path.read_text(errors="replace")
        for path in Path(tmp_path_factory.getbasetemp()).rglob("*.log")
        if path.name not in NOT_OURS
    }
    assert "COPY vault.payment_methods" in dump
    assert "COPY vault.vault_audit" in dump
    assert {"vault.log", "gateway.log", "envoy.log"} <= {p.name for p in logs}
    assert '"path":"/v1/payment_methods"' in logs[mesh.log_dir / "envoy.log"]

    leaks = [
        (number, where)
        for number in cards.ALL
        for form in forms(number)
        for where, text in [("pg_dump", dump), *((str(p), t) for p, t in logs.items())]
        if form in text
    ]

    assert leaks == []
