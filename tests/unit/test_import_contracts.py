"""Who may import whom is checked by import-linter (`make lint-imports`, the contracts in
pyproject.toml's [tool.importlinter]). What it cannot check: that its contracts see every
package there is, so that a new one cannot escape them by not being named."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def packages() -> set[str]:
    """Every top-level package: the installed ones under src/ and the developer tools."""
    installed = {path.parent.name for path in (ROOT / "src").glob("*/__init__.py")}
    return installed | {"dev"}


def contract(contract_id: str) -> dict:
    [found] = [c for c in CONFIG["contracts"] if c.get("id") == contract_id]
    return found


def test_the_contracts_read_every_package():
    assert set(CONFIG["root_packages"]) == packages()


def test_every_package_stands_on_one_floor():
    floors = [
        {name.strip() for name in layer.replace(":", "|").split("|")}
        for layer in contract("floors")["layers"]
    ]
    named = [name for floor in floors for name in floor]
    assert sorted(named) == sorted(packages())
    assert floors[-1] == {"paymesh"}  # the kit and the stubs, below everything


def test_every_domain_is_held_to_both_domain_contracts():
    domains = {path.parent for path in (ROOT / "src").glob("**/domain/__init__.py")}
    assert domains  # gateway_svc's and rebill_svc's at least
    for contract_id in ("plain-domains", "domains-stand-alone"):
        assert contract(contract_id)["source_modules"] == ["**.domain"]
