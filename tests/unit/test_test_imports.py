"""Test modules share helpers through `tests/support/` and fixtures through conftest.py
files that pytest finds itself: no module under tests/ imports a test module (one under
`tests.integration` or `tests.unit`) or a conftest, so that running, moving or deleting one
test file never changes another."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
TEST_PACKAGES = ("tests.integration", "tests.unit")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (`from tests import x` counts as `tests.x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add("." * node.level + (node.module or ""))
    return found


def forbidden(module: str) -> bool:
    return (
        module in TEST_PACKAGES
        or module.startswith(tuple(f"{package}." for package in TEST_PACKAGES))
        or module == "tests.conftest"
        or module.endswith(".conftest")
        or module.startswith(".")  # a relative import reaches a sibling test module
    )


@pytest.mark.parametrize(
    "path", sorted(TESTS.rglob("*.py")), ids=lambda p: str(p.relative_to(TESTS))
)
def test_no_module_under_tests_imports_a_test_module_or_a_conftest(path):
    offending = sorted(m for m in imported_modules(path) if forbidden(m))
    assert not offending, f"{path.relative_to(TESTS)} imports {offending}: use tests/support/"


def test_the_rule_sees_the_imports_it_forbids(tmp_path):
    module = tmp_path / "test_example.py"
    module.write_text(
        "from tests.integration.test_payments import post\n"
        "def f():\n"
        "    from tests import conftest\n"
        "    import tests.unit.test_ids\n"
        "from tests.support.http import call\n"
    )
    assert sorted(m for m in imported_modules(module) if forbidden(m)) == [
        "tests.conftest",
        "tests.integration.test_payments",
        "tests.integration.test_payments.post",
        "tests.unit.test_ids",
    ]


@pytest.mark.parametrize("path", sorted((TESTS / "support").glob("*.py")), ids=lambda p: p.name)
def test_every_support_module_imports(path):
    """A helper that names a module moved away fails here, in the fast tier, not at the
    collection of the integration tests that use it."""
    importlib.import_module(f"tests.support.{path.stem}")
