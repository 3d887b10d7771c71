"""The contracts stay clean and the generated code and Envoy config stay in step with them."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from paymesh.devmesh import Ports, render_envoy_config

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean():
    linked = run(sys.executable, "tools/link_googleapis.py", ".buf/googleapis")
    assert linked.returncode == 0, linked.stderr

    result = run(str(BIN / "buf"), "lint")

    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_stubs_match_the_protos(tmp_path):
    result = run(sys.executable, "tools/gen_protos.py", "--python-out", str(tmp_path))
    assert result.returncode == 0, result.stderr

    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc generated nothing"
    stale = [
        str(path)
        for path in generated
        if not filecmp.cmp(tmp_path / path, ROOT / "src" / path, shallow=False)
    ]
    assert not stale, f"stale stubs, run `make proto`: {stale}"


def test_envoy_accepts_the_config_as_committed_and_as_the_tests_render_it(tmp_path):
    descriptor = tmp_path / "paymesh.pb"
    built = run(sys.executable, "tools/gen_protos.py", "--descriptor-out", str(descriptor))
    assert built.returncode == 0, built.stderr
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "paymesh.pb").write_bytes(descriptor.read_bytes())
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render_envoy_config(Ports.free(), descriptor))

    for config in (ROOT / "envoy" / "envoy.yaml", rendered):
        # The committed file names build/paymesh.pb relative to the working directory.
        result = run(str(BIN / "envoy"), "--mode", "validate", "-c", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
