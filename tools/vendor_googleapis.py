"""Copies the google/api and google/rpc protos that buf needs from the installed
googleapis-common-protos into third_party/googleapis, so `buf lint`, `buf build` and
`buf breaking` work on a fresh clone without network (buf cannot reach the BSR here).

    python tools/vendor_googleapis.py

tests/unit/test_contracts.py checks that the copies define what the installed package
defines, which is what tools/gen_protos.py compiles into Envoy's descriptor set."""

from __future__ import annotations

import shutil
from pathlib import Path

import google.api

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "third_party" / "googleapis"
# What proto/ imports, and the error model (google.rpc.Status and its details) it may.
FILES = (
    "google/api/annotations.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
)


def installed_root() -> Path:
    """site-packages, where googleapis-common-protos keeps google/api/*.proto."""
    return Path(next(iter(google.api.__path__))).parent.parent


def main() -> None:
    for name in FILES:
        (TARGET / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(installed_root() / name, TARGET / name)
        print(f"copied {name}")


if __name__ == "__main__":
    main()
