"""Where a test card number could end up in clear: a dump of the database (every schema, text
and bytea) and the mesh's log files."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.support import cards

# localstripe plays the PSP (it is meant to hold card numbers) and moto plays AWS KMS.
NOT_OURS = {"localstripe.log", "moto.log"}


def forms(number: str) -> list[str]:
    """The number as text, grouped in fours, and hex-encoded as a bytea would dump it."""
    grouped = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return [number, grouped, number.encode().hex()]


def database_dump(database_url: str) -> str:
    url = make_url(database_url)
    return subprocess.run(
        ["pg_dump", "-h", url.host, "-p", str(url.port), "-U", url.username, url.database],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def logs_under(root: Path) -> dict[Path, str]:
    return {
        path: path.read_text(errors="replace")
        for path in root.rglob("*.log")
        if path.name not in NOT_OURS
    }


def card_number_leaks(
    dump: str, logs: dict[Path, str], numbers: Iterable[str] = cards.ALL
) -> list[tuple[str, str]]:
    """(number, where) for each test card number found in clear in the dump or a log."""
    return [
        (number, where)
        for number in numbers
        for form in forms(number)
        for where, text in [("pg_dump", dump), *((str(p), t) for p, t in logs.items())]
        if form in text
    ]
