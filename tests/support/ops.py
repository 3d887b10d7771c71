"""Admin RPCs as an operator calls them: grpcurl straight to a service's gRPC port, with an
`ops` service token (or a merchant's key, or nothing, to see them refused)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from paymesh.platform.service_auth import TokenIssuer

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def grpcurl(
    mesh,
    service: str,
    full_method: str,
    body: dict,
    as_operator: bool = True,
    api_key: str = "",
) -> subprocess.CompletedProcess:
    """`full_method` (`package.Service/Method`) on `service`'s port (`gateway`, `rebill`, …)."""
    headers = []
    if as_operator:
        ops = TokenIssuer("ops", Path(os.environ["PAYMESH_KEYS_DIR"])).token_for(service)
        headers = ["-H", f"x-paymesh-service-token: {ops}"]
    elif api_key:
        headers = ["-H", f"authorization: Bearer {api_key}"]
    return subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            *headers,
            "-d",
            json.dumps(body),
            f"127.0.0.1:{mesh.ports.grpc[service]}",
            full_method,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


ADMIN = "paymesh.gateway.v1.MerchantAdminService"


def admin(mesh, method: str, body: dict, as_operator: bool = True, api_key: str = ""):
    """A MerchantAdminService call on the gateway."""
    return grpcurl(mesh, "gateway", f"{ADMIN}/{method}", body, as_operator, api_key)


def ok(result: subprocess.CompletedProcess) -> dict:
    """The answer of a grpcurl call that must have succeeded."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
