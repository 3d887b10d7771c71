"""The mesh's services, listed once, for the tools that handle all of them (migrations, keys
and certificates, `make run`). Each service declares its own place (name, package, schema,
settings) in its ServiceDefinition."""

from __future__ import annotations

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
