"""Links google/api and google/rpc from the installed googleapis-common-protos into a folder
that buf.yaml names as a module, so `buf lint` resolves imports without network access."""

from __future__ import annotations

import sys
from pathlib import Path

import google.api


def main(target: str) -> None:
    source = Path(next(iter(google.api.__path__))).parent  # site-packages/google
    google_dir = Path(target) / "google"
    google_dir.mkdir(parents=True, exist_ok=True)
    for package in ("api", "rpc", "type"):
        link = google_dir / package
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source / package, target_is_directory=True)


if __name__ == "__main__":
    main(sys.argv[1])
