"""The README's examples as a newcomer runs them: every shell block from "Merchants" to
"Merchant webhooks", then the grpcurl block of "Ops", copied in order into one shell with
the mesh's ports and the merchant key that `paymesh merchants create` printed. Each curl
answers 2xx and each grpcurl succeeds, and what they did adds up; run again with the same
key, as a reader who starts over does, they still do (every Idempotency-Key answers what it
made the first time: no detached card comes back to pay)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.http import call
from tests.support.mesh import ROOT, base_env

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()
PATH_SECTIONS = ("## Merchants: REST through Envoy", "## Merchant webhooks")
GRPCURL_SECTION = ("## Ops: grpcurl", "(`make run` installs grpcurl")
# Every call is logged to $CALLS as "<HTTP status, or grpcurl's exit code> <command line>".
WRAPPERS = r"""
called() { local line="$*"; printf '%s\n' "${line//$'\n'/ }" >> "$CALLS"; }
curl() {
  local answer id argument arguments=()
  for argument in "$@"; do  # as the reader pastes the last id printed, quotes or not
    argument=${argument//__LAST_PM__/$LAST_PM}
    arguments+=("${argument//__LAST_PI__/$LAST_PI}")
  done
  answer=$(command curl -sS -w '\n%{http_code}' "${arguments[@]}")
  printf '%s\n' "${answer%$'\n'*}"
  called "${answer##*$'\n'}" curl "${arguments[@]}"
  id=$(jq -r '.id // empty' <<< "${answer%$'\n'*}" 2>/dev/null)
  case "$id" in pm_*) LAST_PM=$id ;; pi_*) LAST_PI=$id ;; esac
}
grpcurl() {
  command grpcurl "$@"
  called "$?" grpcurl "$@"
}
"""
CREATE_MERCHANT = ".venv/bin/paymesh merchants create"
COPY_THE_KEY = "export SK=sk_test_…"


def sh_blocks(start: str, end: str) -> list[str]:
    section = README[README.index(start) : README.index(end, README.index(start))]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def as_a_reader_runs_it(mesh, sk: str | None) -> tuple[str, list[str]]:
    """The blocks with this mesh's ports; the key copied from what `merchants create`
    printed (or `sk`: a reader starting over with the merchant made the first time), a
    `pm_…` or `pi_…` replaced by the last one printed. A command still holding a placeholder
    (`…`) is left out and returned."""
    ports = {
        "localhost:8080": f"127.0.0.1:{mesh.ports.envoy}",
        "localhost:50051": f"127.0.0.1:{mesh.ports.grpc['gateway']}",
        "localhost:50052": f"127.0.0.1:{mesh.ports.grpc['vault']}",
    }
    script, left_out = [], []
    for block in [*sh_blocks(*PATH_SECTIONS), *sh_blocks(*GRPCURL_SECTION)]:
        for line in block.splitlines():
            for old, new in ports.items():
                line = line.replace(old, new)
            if line.startswith(CREATE_MERCHANT):
                line = "" if sk else f"CREATED=$({line.replace('.venv/bin', str(BIN))})"
            elif line.startswith(COPY_THE_KEY):
                line = f"export SK={sk}" if sk else 'export SK=$(jq -r .secret_key <<< "$CREATED")'
            elif not line.startswith("#"):
                # An id the README leaves to the reader: the last one of its kind printed.
                line = line.replace("pm_…", "__LAST_PM__").replace("pi_…", "__LAST_PI__")
            if not line.startswith("#") and "…" in line.split(" #")[0]:
                left_out.append(line)
                continue
            script.append(line)
    script.append('printf \'{"sk": "%s", "pi": "%s"}\\n\' "$SK" "$PI"')
    return "\n".join(script), left_out


def run(script: str, infra, calls: Path) -> tuple[dict, list[tuple[str, str]]]:
    """What the script left in $SK and $PI, and every call it made."""
    done = subprocess.run(
        ["bash", "-c", WRAPPERS + script],
        env=base_env(infra, CALLS=str(calls), PATH=f"{BIN}:/usr/bin:/bin"),
        cwd=calls.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    logged = [tuple(line.split(" ", 1)) for line in calls.read_text().splitlines()]
    calls.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1]), logged


def failed(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (status, command)
        for status, command in calls
        if not (status.startswith("2") if command.startswith("curl") else status == "0")
    ]


def test_the_readmes_examples_run_top_to_bottom_and_again(mesh, infra, tmp_path):
    script, left_out = as_a_reader_runs_it(mesh, sk=None)
    # Only the dispute lookup needs an id that nothing in the examples makes (a customer's
    # bank opens disputes).
    assert [line for line in left_out if "/v1/disputes/dp_…" not in line] == []

    made, calls = run(script, infra, tmp_path / "calls")

    assert failed(calls) == []
    assert len([c for c in calls if c[1].startswith("curl")]) >= 15
    assert len([c for c in calls if c[1].startswith("grpcurl")]) == 5
    auth = {"authorization": f"Bearer {made['sk']}"}
    captured = call(mesh.url(f"/v1/payment_intents/{made['pi']}"), headers=auth).body
    assert captured["status"] == "succeeded"
    assert (captured["amount_received"], captured["amount_refunded"]) == ("3000", "1000")
    intents = call(mesh.url("/v1/payment_intents?limit=100"), headers=auth).body["data"]
    assert {(i["amount"], i["currency"], i["status"]) for i in intents} == {
        ("1999", "eur", "succeeded"),
        ("5000", "usd", "succeeded"),  # 3000 captured, 2000 released
        ("2500", "usd", "requires_action"),
        ("1500", "usd", "succeeded"),  # the subscription's first period
    }

    again, calls = run(as_a_reader_runs_it(mesh, sk=made["sk"])[0], infra, tmp_path / "calls")

    assert failed(calls) == []
    intents = call(mesh.url("/v1/payment_intents?limit=100"), headers=auth).body["data"]
    paid_once = [i for i in intents if i["amount"] == "1999"]
    assert len(paid_once) == 1  # order-1001 answered what it made
    assert paid_once[0]["status"] == "succeeded"  # with the card of card-1, never detached
