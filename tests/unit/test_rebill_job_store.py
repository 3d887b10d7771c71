"""The job store contract (tests/support/job_store_contract.py) on the in-memory twin; the
same scenarios run on PostgreSQL in tests/integration/test_rebill_job_store_contract.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.job_store_contract import SCENARIOS, MemoryArena


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_the_in_memory_job_store_keeps_the_contract(scenario):
    asyncio.run(scenario(MemoryArena()))
