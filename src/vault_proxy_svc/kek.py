"""Key-encryption key lifecycle: the primary version (recorded in the database), the wrapped
fingerprint secret, rotation, and the re-wrap job that moves data keys to the primary KEK in
batches while tokenizations and reads go on."""

from __future__ import annotations

import asyncio
import secrets as random
import time
import zlib
from dataclasses import dataclass

import structlog
from cryptography.exceptions import InvalidTag
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.server import StartupRefused
from vault_proxy_svc.envelope import binding
from vault_proxy_svc.keys import KeyProvider
from vault_proxy_svc.metrics import CARDS_ON_OLD_KEK, KEK_AGE, REWRAP_FAILURES, REWRAPPED
from vault_proxy_svc.models import AuditEntry
from vault_proxy_svc.postgres_card_store import add_audit
from vault_proxy_svc.tables import kek_versions, payment_methods, secrets

log = structlog.get_logger(__name__)

_LOCK = zlib.crc32(b"vault-kek")
FINGERPRINT_SECRET = "fingerprint"  # noqa: S105 - the secret's name


class KeksUnavailable(StartupRefused):
    """The database holds data wrapped by a KEK version that the key provider cannot unwrap."""


@dataclass(frozen=True)
class RewrapRound:
    moved: int
    resume_after: str  # the token the next page starts after; "" when this pass is over


class KekManager:
    def __init__(self, engine: AsyncEngine, keys: KeyProvider, primary_ttl: float = 1.0):
        self._engine = engine
        self._keys = keys
        self._primary_ttl = primary_ttl
        self._primary: tuple[str, float, float] | None = None  # version, created, fetched at
        self.fingerprint_secret = b""

    async def verify_keys(self) -> None:
        """Unwraps a data key (or secret) of each KEK version the database uses; raises
        KeksUnavailable, saying what to do, when the keys at hand cannot: a vault that cannot
        decrypt its cards must not start. A version passes if any of a few samples unwraps,
        so that a damaged row (which the re-wrap job counts and passes over) does not stop
        the vault; rows too malformed to be tried at all prove nothing either way."""
        async with self._engine.connect() as connection:
            versions = (await connection.scalars(select(kek_versions.c.version))).all()
            samples = [(v, await _wrapped_samples(connection, v)) for v in versions]
        for version, wrapped_by_it in samples:
            problem = await self._problem_with(version, wrapped_by_it)
            if problem is not None:
                raise KeksUnavailable(
                    f"the vault database holds {wrapped_by_it[0][0]} wrapped by KEK version "
                    f"{version!r}, which {self._keys.location} {problem}: restore the keyring "
                    "this database was used with, or run `paymesh dev reset` to drop the "
                    "development database"
                )

    async def _problem_with(
        self, version: str, wrapped_by_it: list[tuple[str, bytes, dict[str, str]]]
    ) -> str | None:
        """None when the keys at hand open what `version` wrapped (or nothing of it can be
        tried); else what is wrong with them."""
        wrong_key = False
        for _what, wrapped, context in wrapped_by_it:
            try:
                await self._keys.unwrap(version, wrapped, context)
                return None
            except LookupError:
                return "does not have"
            except InvalidTag:
                wrong_key = True
            except ValueError:  # a malformed row (too short to hold a nonce) proves nothing
                log.warning("kek_check_row_unreadable", kek_version=version)
        return "holds a different key for" if wrong_key else None

    async def ensure_ready(self) -> None:
        """Makes sure a primary KEK and the fingerprint secret exist, and loads the secret."""
        await self.verify_keys()
        async with self._engine.begin() as connection:
            await connection.execute(select(func.pg_advisory_xact_lock(_LOCK)))
            primary = await connection.scalar(
                select(kek_versions.c.version).where(kek_versions.c.is_primary)
            )
            if primary is None:
                primary = await self._keys.create_version()
                await connection.execute(
                    insert(kek_versions).values(
                        version=primary, provider=self._keys.name, is_primary=True
                    )
                )
                log.info("kek_created", version=primary)
            stored = (
                await connection.execute(
                    select(secrets).where(secrets.c.name == FINGERPRINT_SECRET)
                )
            ).first()
            if stored is None:
                secret = random.token_bytes(32)
                wrapped = await self._keys.wrap(primary, secret, {"secret": FINGERPRINT_SECRET})
                await connection.execute(
                    insert(secrets).values(
                        name=FINGERPRINT_SECRET, kek_version=primary, wrapped=wrapped
                    )
                )
                self.fingerprint_secret = secret
            else:
                self.fingerprint_secret = await self._keys.unwrap(
                    stored.kek_version, stored.wrapped, {"secret": FINGERPRINT_SECRET}
                )

    async def primary(self, refresh: bool = False) -> str:
        now = time.monotonic()
        if refresh or self._primary is None or now - self._primary[2] > self._primary_ttl:
            async with self._engine.connect() as connection:
                row = (
                    await connection.execute(
                        select(kek_versions.c.version, kek_versions.c.created_at).where(
                            kek_versions.c.is_primary
                        )
                    )
                ).one()
            self._primary = (row.version, row.created_at.timestamp(), now)
            KEK_AGE.set(time.time() - row.created_at.timestamp())
        return self._primary[0]

    async def rotate(self, actor: str) -> tuple[str, str]:
        """Makes a new KEK version primary; returns (previous, new)."""
        new = await self._keys.create_version()
        async with self._engine.begin() as connection:
            await connection.execute(select(func.pg_advisory_xact_lock(_LOCK)))
            previous = await connection.scalar(
                update(kek_versions)
                .where(kek_versions.c.is_primary)
                .values(is_primary=False)
                .returning(kek_versions.c.version)
            )
            await connection.execute(
                insert(kek_versions).values(version=new, provider=self._keys.name, is_primary=True)
            )
            await add_audit(
                connection,
                AuditEntry(
                    actor=actor,
                    action="kek_rotated",
                    result="ok",
                    details={"previous": previous, "primary": new},
                ),
            )
        await self.primary(refresh=True)
        log.info("kek_rotated", previous=previous, primary=new)
        return previous, new

    async def rewrap_once(self, batch_size: int, after: str = "") -> RewrapRound:
        """Moves the next `batch_size` data keys on an old KEK (tokens after `after`, in
        token order) and every stale secret to the primary KEK. A card whose data key does
        not unwrap is counted, logged and passed over: one damaged row must not hold back
        the rotation of every other card."""
        primary = await self.primary(refresh=True)
        async with self._engine.connect() as connection:
            cards = (
                await connection.execute(
                    select(
                        payment_methods.c.id,
                        payment_methods.c.merchant_id,
                        payment_methods.c.livemode,
                        payment_methods.c.kek_version,
                        payment_methods.c.wrapped_key,
                    )
                    .where(
                        payment_methods.c.wrapped_key.is_not(None),
                        payment_methods.c.kek_version != primary,
                        payment_methods.c.id > after,
                    )
                    .order_by(payment_methods.c.id)
                    .limit(batch_size)
                )
            ).all()
            stale_secrets = (
                await connection.execute(select(secrets).where(secrets.c.kek_version != primary))
            ).all()
        # KMS calls happen outside any transaction; the updates below only apply to rows
        # still wrapped the way we read them (a detach or another re-wrap in between wins).
        moved = []
        for card in cards:
            context = binding(card.id, card.merchant_id, card.livemode)
            try:
                new_wrapped = await self._keys.rewrap(
                    card.kek_version, card.wrapped_key, primary, context
                )
            except Exception as error:  # noqa: BLE001 - any card's failure is counted, not fatal
                REWRAP_FAILURES.inc()
                log.warning(
                    "rewrap_card_failed",
                    payment_method=card.id,
                    kek_version=card.kek_version,
                    error=type(error).__name__,
                )
                continue
            moved.append(
                {"token": card.id, "old_version": card.kek_version, "new_wrapped": new_wrapped}
            )
        rewrapped_secrets = [
            (
                secret,
                await self._keys.rewrap(
                    secret.kek_version, secret.wrapped, primary, {"secret": secret.name}
                ),
            )
            for secret in stale_secrets
        ]
        async with self._engine.begin() as connection:
            if moved:
                await connection.execute(
                    update(payment_methods)
                    .where(
                        payment_methods.c.id == bindparam("token"),
                        payment_methods.c.kek_version == bindparam("old_version"),
                        payment_methods.c.wrapped_key.is_not(None),
                    )
                    .values(kek_version=primary, wrapped_key=bindparam("new_wrapped")),
                    moved,
                )
            for secret, wrapped in rewrapped_secrets:
                await connection.execute(
                    update(secrets)
                    .where(
                        secrets.c.name == secret.name,
                        secrets.c.kek_version == secret.kek_version,
                    )
                    .values(kek_version=primary, wrapped=wrapped)
                )
            if moved or stale_secrets:
                await add_audit(
                    connection,
                    AuditEntry(
                        actor="worker:rewrap",
                        action="rewrap",
                        result="ok",
                        details={
                            "cards": len(moved),
                            "secrets": len(stale_secrets),
                            "to": primary,
                        },
                    ),
                )
        REWRAPPED.inc(len(moved))
        full_page = len(cards) == batch_size
        return RewrapRound(moved=len(moved), resume_after=cards[-1].id if full_page else "")

    async def pending_rewrap(self) -> int:
        primary = await self.primary()
        async with self._engine.connect() as connection:
            return await connection.scalar(
                select(func.count())
                .select_from(payment_methods)
                .where(
                    payment_methods.c.wrapped_key.is_not(None),
                    payment_methods.c.kek_version != primary,
                )
            )

    async def run_rewrap(self, batch_size: int, interval: float) -> None:
        """Background job: passes over the cards on an old KEK page by page, then rests
        `interval` seconds before the next pass (which retries the cards that failed)."""
        after = ""
        while True:
            try:
                done = await self.rewrap_once(batch_size, after)
                CARDS_ON_OLD_KEK.set(await self.pending_rewrap())
                if done.moved:
                    log.info("rewrapped", cards=done.moved)
                after = done.resume_after
                if after:
                    await asyncio.sleep(0)  # yield to requests between batches
                    continue
            except Exception:  # a bad round is retried; reads work on either KEK meanwhile
                log.exception("rewrap_failed")
            await asyncio.sleep(interval)


async def _wrapped_samples(
    connection, version: str, cards: int = 10
) -> list[tuple[str, bytes, dict[str, str]]]:
    """(what it is, wrapped key, context) of up to `cards` cards, then of the secrets,
    wrapped by `version`."""
    rows = (
        await connection.execute(
            select(payment_methods)
            .where(
                payment_methods.c.kek_version == version,
                payment_methods.c.wrapped_key.is_not(None),
            )
            .limit(cards)
        )
    ).all()
    stored = (
        await connection.execute(select(secrets).where(secrets.c.kek_version == version))
    ).all()
    return [
        ("cards", card.wrapped_key, binding(card.id, card.merchant_id, card.livemode))
        for card in rows
    ] + [
        ("its card fingerprint secret", secret.wrapped, {"secret": secret.name})
        for secret in stored
    ]
