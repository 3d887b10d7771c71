"""Merchants and their secret API keys. A key is shown once, at creation; the database keeps
its SHA-256 and last 4 characters. Test and live keys are separate worlds."""

from __future__ import annotations

import hmac
import secrets
import string
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_svc.tables import api_keys, merchants
from paymesh.platform.callers import Merchant, api_key_hash
from paymesh.platform.db import autocommit
from paymesh.platform.errors import NotFound
from paymesh.platform.notifications import notify

# Sent (with the merchant's id) when a merchant's API keys or PSP route change: every gateway
# process forgets what it remembered of them at once (gateway_svc.service).
SETTINGS_CHANGED = "gateway_merchant_settings"

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
                await _add_key(connection, merchant.id, key, livemode)
        return merchant

    async def get(self, merchant_id: str) -> tuple[Row, list[Row]]:
        async with self._reads.connect() as connection:
            merchant = (
                await connection.execute(select(merchants).where(merchants.c.id == merchant_id))
            ).first()
            if merchant is None:
                raise NotFound(f"no such merchant: {merchant_id!r}", reason="resource_missing")
            keys = (
                await connection.execute(
                    select(api_keys)
                    .where(api_keys.c.merchant_id == merchant_id)
                    .order_by(api_keys.c.created_at)
                )
            ).all()
        return merchant, keys

    async def page(self, limit: int, starting_after: str) -> tuple[list[Row], bool]:
        query = select(merchants).order_by(merchants.c.id).limit(limit + 1)
        if starting_after:
            query = query.where(merchants.c.id > starting_after)
        async with self._reads.connect() as connection:
            rows = (await connection.execute(query)).all()
        return rows[:limit], len(rows) > limit

    async def roll_key(self, merchant_id: str, livemode: bool) -> tuple[str, Row]:
        """A new key for the mode; the mode's other keys are revoked in the same transaction."""
        await self.get(merchant_id)
        key = new_api_key(livemode)
        async with self._engine.begin() as connection:
            await connection.execute(
                update(api_keys)
                .where(
                    api_keys.c.merchant_id == merchant_id,
                    api_keys.c.livemode == livemode,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=func.now())
            )
            row = await _add_key(connection, merchant_id, key, livemode)
            await notify(connection, SETTINGS_CHANGED, merchant_id)
        return key, row

    async def revoke_key(self, merchant_id: str, key_id: str) -> Row:
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id, api_keys.c.merchant_id == merchant_id)
                    .values(revoked_at=func.coalesce(api_keys.c.revoked_at, func.now()))
                    .returning(api_keys)
                )
            ).first()
            await notify(connection, SETTINGS_CHANGED, merchant_id)
        if row is None:
            raise NotFound(f"no such API key: {key_id!r}", reason="resource_missing")
        return row

    async def set_routing(self, merchant_id: str, psps: list[str]) -> None:
        async with self._engine.begin() as connection:
            updated = await connection.execute(
                update(merchants).where(merchants.c.id == merchant_id).values(psp_routing=psps)
            )
            await notify(connection, SETTINGS_CHANGED, merchant_id)
        if not updated.rowcount:
            raise NotFound(f"no such merchant: {merchant_id!r}", reason="resource_missing")

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


async def _add_key(connection, merchant_id: str, key: str, livemode: bool) -> Row:
    return (
        await connection.execute(
            insert(api_keys)
            .values(
                id=random_id("key_", 16),
                merchant_id=merchant_id,
                livemode=livemode,
                key_hash=api_key_hash(key),
                last4=key[-4:],
            )
            .returning(api_keys)
        )
    ).one()
