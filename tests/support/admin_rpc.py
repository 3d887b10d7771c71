"""Admin RPCs as the back office calls them: straight to a service's gRPC port with a service
token of its own identity (`backoffice`, or `ops`, or another to see it refused), through the
generated stubs, and the field an INVALID_ARGUMENT names."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paymesh.platform.service_auth import SERVICE_TOKEN_HEADER, TokenIssuer, init_keys


def keys_dir(mesh) -> Path:
    env = getattr(mesh, "env", None) or {}
    return Path(env.get("PAYMESH_KEYS_DIR") or os.environ["PAYMESH_KEYS_DIR"])


def service_token(mesh, audience: str, identity: str = "backoffice") -> str:
    """A token of `identity` for `audience`; its key pair is made first if the mesh's keys
    lack it (the services read public keys again on a token they cannot verify)."""
    keys = keys_dir(mesh)
    init_keys(keys, [identity])
    return TokenIssuer(identity, keys).token_for(audience)


def admin_call(mesh, service: str, stub_class, method: str, request, identity="backoffice"):
    metadata = ((SERVICE_TOKEN_HEADER, service_token(mesh, service, identity)),)
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc[service]}") as channel:
        return getattr(stub_class(channel), method)(request, metadata=metadata, timeout=20)


def refusal(call) -> grpc.RpcError:
    """The error a call (a thunk) raised."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call was not refused")


def fields_of(error: grpc.RpcError) -> list[str]:
    """The fields an INVALID_ARGUMENT's BadRequest names."""
    status = rpc_status.from_call(error)
    found: list[str] = []
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [v.field for v in bad.field_violations]
    return found


def reason_of(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""
