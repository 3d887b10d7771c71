"""The project's layout, written down as rules on who may import whom (every import in src/,
at any depth of a module, read with ast):

- the shared kit (`paymesh.platform`) imports no service and no developer tool;
- a service imports no other service (they talk through generated stubs) and no developer
  tool (`paymesh.devmesh`, `paymesh.devinfra`, `paymesh.sandbox_psp`,
  `paymesh.localstripe_cards`);
- inside `paymesh`, only the operator CLI and the list of services import services;
- gateway_svc's and rebill_svc's domains import no gRPC, SQLAlchemy, HTTP client or adapter
  of their own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
SERVICES = ("gateway_svc", "vault_proxy_svc", "rebill_svc", "webhook_svc")
DEV_TOOLS = (
    "paymesh.devmesh",
    "paymesh.devinfra",
    "paymesh.sandbox_psp",
    "paymesh.localstripe_cards",
)
OPS_WIRING = ("paymesh.cli", "paymesh.services")
DOMAIN_MAY_NOT_USE = ("grpc", "google", "sqlalchemy", "httpx", "psycopg", "pika", "paymesh.gateway")


def modules() -> dict[str, set[str]]:
    """Every module of src/ (generated stubs aside) and what it imports."""
    found = {}
    for path in SRC.rglob("*.py"):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")) or ".egg-info" in str(path):
            continue
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
        found[name] = imported
    return found


MODULES = modules()


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def test_the_rules_see_the_whole_source_tree():
    assert {"paymesh.platform.server", "gateway_svc.domain.status", "paymesh.cli"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if within(m, "paymesh.platform")))
def test_the_shared_kit_imports_no_service_and_no_dev_tool(module):
    assert not [i for i in MODULES[module] if within(i, *SERVICES, *DEV_TOOLS)]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if within(m, *SERVICES)))
def test_a_service_imports_no_other_service_and_no_dev_tool(module):
    own = module.split(".")[0]
    others = [s for s in SERVICES if s != own]
    assert not [i for i in MODULES[module] if within(i, *others, *DEV_TOOLS, *OPS_WIRING)]


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if within(m, "paymesh") and m not in OPS_WIRING)
)
def test_only_the_ops_wiring_imports_services(module):
    assert not [i for i in MODULES[module] if within(i, *SERVICES)]


DOMAINS = ("gateway_svc.domain", "rebill_svc.domain", "webhook_svc.domain")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if within(m, *DOMAINS)))
def test_the_payment_and_billing_domains_are_plain_python(module):
    service = module.split(".")[0]
    allowed_own = (
        f"{service}.domain",
        "paymesh.platform.problems",
        "paymesh.platform.merchant_input",
    )
    assert not [i for i in MODULES[module] if within(i, *DOMAIN_MAY_NOT_USE)]
    assert not [
        i for i in MODULES[module] if within(i, service, "paymesh") and not within(i, *allowed_own)
    ]
