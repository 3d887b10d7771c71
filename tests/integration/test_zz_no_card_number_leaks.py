"""Runs last (hence the name): after everything above tokenized, rejected, provisioned and
logged, not one test card number is readable in the database (pg_dump of every schema, text
and bytea), in any service log or in Envoy's access log. (The modules on a mesh of their own
check theirs the same way: `own_mesh` in conftest.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.leaks import card_number_leaks, database_dump, logs_under

pytestmark = pytest.mark.integration


def test_no_test_card_number_is_stored_or_logged_in_clear(mesh, infra, tmp_path_factory):
    dump = database_dump(infra.database_url)
    logs = logs_under(Path(tmp_path_factory.getbasetemp()))
    assert "COPY vault.payment_methods" in dump
    assert "COPY vault.vault_audit" in dump
    assert {"vault.log", "gateway.log", "envoy.log"} <= {p.name for p in logs}
    assert '"path":"/v1/payment_methods"' in logs[mesh.log_dir / "envoy.log"]

    assert card_number_leaks(dump, logs) == []
