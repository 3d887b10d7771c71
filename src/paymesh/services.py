"""The four services of the mesh, for tools that handle all of them (migrations, run)."""

from __future__ import annotations

from gateway_svc.service import DEFINITION as GATEWAY
from paymesh.platform.server import ServiceDefinition
from rebill_svc.service import DEFINITION as REBILL
from vault_proxy_svc.service import DEFINITION as VAULT
from webhook_svc.service import DEFINITION as WEBHOOK

ALL: dict[str, ServiceDefinition] = {
    "gateway": GATEWAY,
    "vault": VAULT,
    "rebill": REBILL,
    "webhook": WEBHOOK,
}
# The package each service is started from: `python -m <package>`.
PACKAGES = {
    "gateway": "gateway_svc",
    "vault": "vault_proxy_svc",
    "rebill": "rebill_svc",
    "webhook": "webhook_svc",
}
