"""Merchants and their secret API keys. A key is shown once, at creation; the database keeps
its SHA-256 and last 4 characters. Test and live keys are separate worlds."""

from __future__ import annotations

import hmac
import secrets
import string
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_svc.tables import api_keys, merchants
from paymesh.platform.callers import Merchant, api_key_hash
from paymesh.platform.db import autocommit

_ALPHABET = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_api_key(livemode: bool) -> str:
    return random_id("sk_live_" if livemode else "sk_test_", 32)


@dataclass(frozen=True)
class NewMerchant:
    id: str
    name: str
    secret_key: str
    live_secret_key: str


class MerchantRepository:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reads = autocommit(engine)

    async def create(self, name: str) -> NewMerchant:
        merchant = NewMerchant(random_id("acct_", 16), name, new_api_key(False), new_api_key(True))
        async with self._engine.begin() as connection:
            await connection.execute(insert(merchants).values(id=merchant.id, name=name))
            for key, livemode in ((merchant.secret_key, False), (merchant.live_secret_key, True)):
                await connection.execute(
                    insert(api_keys).values(
                        id=random_id("key_", 16),
                        merchant_id=merchant.id,
                        livemode=livemode,
                        key_hash=api_key_hash(key),
                        last4=key[-4:],
                    )
                )
        return merchant

    async def verify(self, api_key: str) -> Merchant | None:
        """The merchant of an active key, or None."""
        digest = api_key_hash(api_key)
        async with self._reads.connect() as connection:
            row = (
                await connection.execute(
                    select(api_keys.c.merchant_id, api_keys.c.livemode, api_keys.c.key_hash).where(
                        api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return Merchant(row.merchant_id, row.livemode)
