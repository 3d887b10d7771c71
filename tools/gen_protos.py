"""Generates the Python stubs (with .pyi) and Envoy's descriptor set from proto/.

    python tools/gen_protos.py --python-out src --descriptor-out build/paymesh.pb

google/api and google/rpc come from the installed googleapis-common-protos, the well-known
types from grpcio-tools. (third_party/googleapis holds copies for buf only, which has no
offline source of its own; a unit test keeps them equal to the installed package.)
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def googleapis_include() -> str:
    import google.api

    return str(Path(next(iter(google.api.__path__))).parent.parent)


def well_known_include() -> str:
    return str(resources.files("grpc_tools") / "_proto")


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))


def run_protoc(args: list[str], extra_files: tuple[str, ...] = ()) -> None:
    includes = [f"-I{PROTO_DIR}", f"-I{googleapis_include()}", f"-I{well_known_include()}"]
    code = protoc.main(["protoc", *includes, *args, *proto_files(), *extra_files])
    if code != 0:
        sys.exit(f"protoc failed with exit code {code}")


def generate_python(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run_protoc([f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"])
    # Regular packages, so setuptools and mypy find the generated modules.
    for proto in proto_files():
        package_dir = out / Path(proto).parent
        while package_dir != out:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent


def generate_descriptor_set(out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # --include_imports and the google.rpc error details, so Envoy can render those details
    # in its JSON error bodies.
    run_protoc(
        ["--include_imports", "--include_source_info", f"--descriptor_set_out={out}"],
        extra_files=("google/rpc/error_details.proto",),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python-out", type=Path)
    parser.add_argument("--descriptor-out", type=Path)
    args = parser.parse_args()
    if args.python_out:
        generate_python(args.python_out)
    if args.descriptor_out:
        generate_descriptor_set(args.descriptor_out)


if __name__ == "__main__":
    main()
