"""The card store contract (tests/support/card_store_contract.py) on the in-memory twin; the
same scenarios run on PostgreSQL in tests/integration/test_vault_card_store_contract.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import card_store_contract
from tests.support.card_store_contract import MemoryArena


@pytest.mark.parametrize("scenario", card_store_contract.SCENARIOS, ids=lambda s: s.__name__)
def test_the_in_memory_card_store_keeps_the_contract(scenario):
    asyncio.run(scenario(MemoryArena()))
