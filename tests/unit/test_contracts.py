"""The contracts stay clean and the generated code and Envoy config stay in step with them."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import google.api
import pytest
import yaml
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from dev.devmesh import Ports, render_envoy_config

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VENDORED_GOOGLEAPIS = ROOT / "third_party" / "googleapis"


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def fresh_clone(target: Path) -> Path:
    """The files a clone of the working tree would have (nothing ignored, nothing generated)."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


@pytest.mark.tools
def test_buf_lint_and_build_work_on_a_fresh_clone(tmp_path):
    clone = fresh_clone(tmp_path)

    for command in ("lint", "build"):
        result = run(str(BIN / "buf"), command, cwd=clone)
        assert result.returncode == 0, f"buf {command}: {result.stdout}{result.stderr}"


def compiled(
    include: Path, names: list[str], out: Path
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The descriptors protoc makes of `names` (comments and layout do not count)."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [f"-I{include}", f"-I{well_known}", f"--descriptor_set_out={out}", *names]
    assert protoc.main(["protoc", *args]) == 0
    return {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}


def test_the_vendored_googleapis_define_what_the_installed_package_defines(tmp_path):
    """buf reads third_party/googleapis; tools/gen_protos.py and the services use the
    installed googleapis-common-protos. The two must not drift apart."""
    names = sorted(
        str(path.relative_to(VENDORED_GOOGLEAPIS)) for path in VENDORED_GOOGLEAPIS.rglob("*.proto")
    )
    assert "google/api/annotations.proto" in names
    installed = Path(next(iter(google.api.__path__))).parent.parent

    vendored = compiled(VENDORED_GOOGLEAPIS, names, tmp_path / "vendored.pb")
    original = compiled(installed, names, tmp_path / "installed.pb")

    drifted = [name for name in names if vendored[name] != original[name]]

    assert not drifted, f"run `python tools/vendor_googleapis.py`: {drifted} differ"


@pytest.mark.tools
def test_buf_breaking_refuses_a_removed_field(tmp_path):
    """tools/buf_breaking.sh compares with the previous commit and fails on a break."""
    clone = fresh_clone(tmp_path / "clone")
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false")
    assert run("git", "init", "-q", cwd=clone).returncode == 0
    assert run(*git, "add", "-A", cwd=clone).returncode == 0
    assert run(*git, "commit", "-qm", "published", cwd=clone).returncode == 0
    env_buf = {**os.environ, "BUF": str(BIN / "buf")}
    check = [str(clone / "tools" / "buf_breaking.sh"), "HEAD"]
    unchanged = subprocess.run(check, cwd=clone, capture_output=True, text=True, env=env_buf)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr

    proto = next((clone / "proto").rglob("*.proto"))
    text = proto.read_text()
    field = next(line for line in text.splitlines() if line.strip().startswith("string "))
    proto.write_text(text.replace(field, "", 1))
    broken = subprocess.run(check, cwd=clone, capture_output=True, text=True, env=env_buf)

    assert broken.returncode != 0, broken.stdout + broken.stderr
    assert "deleted" in broken.stdout.lower(), broken.stdout


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


@pytest.mark.tools
def test_envoy_accepts_the_config_as_committed_and_as_the_tests_render_it(tmp_path):
    descriptor = tmp_path / "paymesh.pb"
    built = run(sys.executable, "tools/gen_protos.py", "--descriptor-out", str(descriptor))
    assert built.returncode == 0, built.stderr
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "paymesh.pb").write_bytes(descriptor.read_bytes())
    # GET /openapi.json is a direct response of that file: Envoy reads it at start.
    openapi = tmp_path / "build" / "openapi.json"
    built = run(sys.executable, "tools/gen_openapi.py", str(descriptor), str(openapi))
    assert built.returncode == 0, built.stderr
    edge = tmp_path / "build" / "edge.lua"
    built = run(
        sys.executable, "tools/gen_edge_lua.py", str(descriptor), "envoy/edge.lua", str(edge)
    )
    assert built.returncode == 0, built.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render_envoy_config(Ports.free(), descriptor))
    traced = tmp_path / "traced.yaml"
    traced.write_text(
        render_envoy_config(Ports.free(), descriptor, otlp_endpoint="http://collector:4318")
    )

    for config in (ROOT / "envoy" / "envoy.yaml", rendered, traced):
        # The committed file names build/paymesh.pb relative to the working directory.
        result = run(str(BIN / "envoy"), "--mode", "validate", "-c", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.tools
def test_envoy_traces_to_the_services_otlp_endpoint_and_not_at_all_without_one():
    def tracing_of(config: dict):
        manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
        return manager["typed_config"].get("tracing"), clusters.get("otel_collector")

    tracing, cluster = tracing_of(
        yaml.safe_load(render_envoy_config(Ports.free(), otlp_endpoint="http://127.0.0.1:4999"))
    )
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 4999}
    assert tracing_of(yaml.safe_load(render_envoy_config(Ports.free()))) == (None, None)
