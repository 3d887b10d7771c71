"""`python -m backoffice`: the back office on BACKOFFICE_HOST:BACKOFFICE_PORT (uvicorn)."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from backoffice.app import build_app
from backoffice.config import BackofficeSettings
from paymesh.platform.logging import configure_logging


def main() -> int:
    try:
        settings = BackofficeSettings()
    except ValidationError as error:
        print("\n".join(str(e["msg"]) for e in error.errors()), file=sys.stderr)
        return 1
    configure_logging("backoffice", settings.log_level)
    try:
        app = build_app(settings)
    except OSError as error:  # no service key: `paymesh keys init`
        print(f"backoffice: {error}", file=sys.stderr)
        return 1
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
