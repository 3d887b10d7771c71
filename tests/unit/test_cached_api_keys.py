"""Remembered API-key checks are forgotten at once on a change, even one that lands while a
check is being asked: that answer may predate the change, so it is not remembered."""

from __future__ import annotations

import asyncio

from paymesh.platform.callers import CachedApiKeyVerifier, Merchant


class SlowKeys:
    def __init__(self):
        self.asked = 0
        self.release = asyncio.Event()
        self.merchant: Merchant | None = Merchant("acct_1", False)

    async def verify(self, api_key: str) -> Merchant | None:
        self.asked += 1
        answer = self.merchant  # read now, delivered later
        await self.release.wait()
        return answer


def test_an_answer_that_was_asked_before_a_forget_is_not_remembered():
    async def main():
        keys = SlowKeys()
        cache = CachedApiKeyVerifier(keys)
        asking = asyncio.create_task(cache.verify("sk_test_1"))
        await asyncio.sleep(0)
        keys.merchant = None  # revoked while the check was on its way
        cache.forget()
        keys.release.set()
        assert await asking == Merchant("acct_1", False)  # the answer as it was read

        assert await cache.verify("sk_test_1") is None  # asked again, not remembered
        assert keys.asked == 2

    asyncio.run(main())


def test_an_answer_is_remembered_until_forgotten():
    async def main():
        keys = SlowKeys()
        keys.release.set()
        cache = CachedApiKeyVerifier(keys)
        await cache.verify("sk_test_1")
        await cache.verify("sk_test_1")
        assert keys.asked == 1
        cache.forget()
        await cache.verify("sk_test_1")
        assert keys.asked == 2

    asyncio.run(main())
