"""The delivery store contract (tests/support/delivery_store_contract.py) on the in-memory
twin; tests/integration/test_delivery_store_contract.py runs it on PostgreSQL."""

from __future__ import annotations

import asyncio

from tests.support.delivery_store_contract import MemoryWorld, scenarios
from webhook_svc.outbound.memory_delivery_store import InMemoryDeliveryStore


@scenarios
def test_the_in_memory_delivery_store_keeps_the_contract(scenario):
    store = InMemoryDeliveryStore()
    asyncio.run(scenario(store, MemoryWorld(store)))
