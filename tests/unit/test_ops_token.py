"""`paymesh ops-token` run outside the repository's directory says in one line which key it
looked for, where, and how to point it at the right one: no traceback, and no advice to make
new keys that the running services would not know."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PAYMESH = Path(sys.executable).parent / "paymesh"


def test_outside_the_repository_it_says_in_one_line_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PAYMESH_KEYS_DIR"}
    done = subprocess.run(
        [str(PAYMESH), "ops-token"], cwd=tmp_path, env=env, capture_output=True, text=True
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert str(tmp_path / "var" / "keys" / "ops.key") in line
    assert "PAYMESH_KEYS_DIR" in line
    assert "keys init" not in line
