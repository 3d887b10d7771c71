"""Runs after the rest of the suite (hence the name): everything the tests wrote, through every
path and fault, still forms an intact payment_audit chain for every merchant."""

from __future__ import annotations

import json

import pytest

from tests.support.mesh import base_env, paymesh

pytestmark = pytest.mark.integration


def test_the_audit_chain_of_everything_the_suite_wrote_verifies(infra, mesh):
    assert json.loads(paymesh("audit", "verify", env=base_env(infra))) == {"intact": True}
