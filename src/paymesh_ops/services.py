"""The mesh's services, listed once, for the tools that handle all of them (migrations, keys
and certificates, `make run`). Each service declares its own place (name, package, schema,
settings) in its ServiceDefinition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import backoffice
from gateway_svc.service import DEFINITION as GATEWAY
from paymesh.platform.server import ServiceDefinition
from rebill_svc.service import DEFINITION as REBILL
from vault_proxy_svc.service import DEFINITION as VAULT
from webhook_svc.service import DEFINITION as WEBHOOK

ALL: dict[str, ServiceDefinition] = {d.name: d for d in (GATEWAY, VAULT, REBILL, WEBHOOK)}
# Identities that only call the services: operators (grpcurl, admin RPCs, `paymesh ops-token`)
# and Envoy (TLS towards the services; it holds no service key).
OPERATOR = "ops"
EDGE = "envoy"

# The back office: no gRPC server, but a client of the mesh with an identity of its own (a key
# pair, a client certificate) and a schema of its own (migrations, a runtime role).
BACKOFFICE = backoffice.NAME
CLIENTS = (OPERATOR, BACKOFFICE)  # identities that only call the services, with a key pair


@dataclass(frozen=True)
class Schema:
    """What `paymesh migrate NAME` needs: the schema and its migrations."""

    name: str
    schema: str
    migrations_dir: Path


# Everything `paymesh migrate` migrates, in order: the services, then the back office.
SCHEMAS: dict[str, Schema] = {
    **{d.name: Schema(d.name, d.schema, d.migrations_dir) for d in ALL.values()},
    BACKOFFICE: Schema(BACKOFFICE, backoffice.SCHEMA, backoffice.MIGRATIONS_DIR),
}
