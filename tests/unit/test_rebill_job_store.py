"""The job store and dead-letter contracts (tests/support/job_store_contract.py,
dead_letter_contract.py) on the in-memory twins; the same scenarios run on PostgreSQL in
tests/integration/test_rebill_job_store_contract.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import dead_letter_contract, job_store_contract
from tests.support.job_store_contract import MemoryArena


@pytest.mark.parametrize(
    "scenario",
    [*job_store_contract.SCENARIOS, *dead_letter_contract.SCENARIOS],
    ids=lambda s: s.__name__,
)
def test_the_in_memory_job_store_and_dead_letters_keep_the_contract(scenario):
    asyncio.run(scenario(MemoryArena()))
