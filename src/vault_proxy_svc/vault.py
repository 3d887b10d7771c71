"""The vault's use cases: tokenize, read, detach (crypto-shred), and the cards at the PSPs
(`provisioning`). Plain logic over the repository, the key provider and the PSP clients; no
gRPC here."""

from __future__ import annotations

import secrets
import string
from typing import Any, Protocol

import structlog
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Merchant
from paymesh.platform.direct_sql import DirectSql
from paymesh.platform.errors import NotFound
from paymesh.platform.idempotency.keys import in_use
from paymesh.platform.idempotency.store import Claim, NewKey
from paymesh.platform.outbox import add_event, event_values, snapshot
from vault_proxy_svc import repository
from vault_proxy_svc.cards import Card
from vault_proxy_svc.cvc_store import CvcStore
from vault_proxy_svc.envelope import binding, fingerprint, seal
from vault_proxy_svc.kek import KekManager
from vault_proxy_svc.keys import KeyProvider
from vault_proxy_svc.provisioning import CardProvisioning
from vault_proxy_svc.psp import CardProvisioner

log = structlog.get_logger(__name__)
_ALPHABET = string.ascii_letters + string.digits


_TOKEN_LENGTH = 24
# The largest multiple of the alphabet's size that fits in a byte: bytes at or above it are
# dropped, so every character is equally likely (as with secrets.choice, at a tenth of its
# CPU: one system call instead of 24 rejection loops).
_UNBIASED_BYTES = 256 - 256 % len(_ALPHABET)


def new_token() -> str:
    characters: list[str] = []
    while len(characters) < _TOKEN_LENGTH:
        characters += [
            _ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(32) if b < _UNBIASED_BYTES
        ]
    return "pm_" + "".join(characters[:_TOKEN_LENGTH])


class Vault:
    def __init__(
        self,
        engine: AsyncEngine,
        direct: DirectSql,
        keys: KeyProvider,
        keks: KekManager,
        outbox: Table,
        psps: dict[str, CardProvisioner],
        cvcs: CvcStore,
        revocations: Revocations,
    ):
        self._engine = engine
        self._revocations = revocations
        self._keys = keys
        self._keks = keks
        self._outbox = outbox
        self.payment_methods = repository.PaymentMethodRepository(direct)
        self.provisioning = CardProvisioning(engine, keys, self.payment_methods, psps, cvcs)

    async def tokenize(
        self,
        merchant: Merchant,
        card: Card,
        billing: dict[str, Any],
        key: Claim | NewKey | None = None,
    ) -> dict[str, Any] | None:
        """A new token for the card; with `key`, bound to it in the same statement. None, with
        nothing written, when a NewKey turns out to be used already."""
        token = new_token()
        kek_version = await self._keks.primary()
        sealed = await seal(
            card.number, binding(token, merchant.id, merchant.livemode), self._keys, kek_version
        )
        card_values = {
            "id": token,
            "merchant_id": merchant.id,
            "livemode": merchant.livemode,
            "brand": card.brand,
            "last4": card.last4,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "fingerprint": fingerprint(self._keks.fingerprint_secret, merchant.id, card.number),
            "kek_version": sealed.kek_version,
            "wrapped_key": sealed.wrapped_key,
            "nonce": sealed.nonce,
            "ciphertext": sealed.ciphertext,
            "billing_details": billing or None,
        }
        row = await self.payment_methods.insert_tokenized(
            card_values,
            audit={
                "actor": f"merchant:{merchant.id}",
                "action": "tokenize",
                "result": "ok",
                "payment_method": token,
                "merchant_id": merchant.id,
                "details": {"brand": card.brand, "last4": card.last4, "kek": kek_version},
            },
            event=event_values(
                event_type="payment_method.created",
                aggregate_type="payment_method",
                aggregate_id=token,
                payload={},  # the card's row as written: see repository.SEALED_COLUMNS
            ),
            key=key,
        )
        if row is None:
            if isinstance(key, NewKey):
                return None
            raise in_use()
        self.provisioning.hold_cvc_and_provision_ahead(merchant, token, card)
        return row

    async def get(self, merchant: Merchant, token: str) -> dict[str, Any]:
        row = await self.payment_methods.get(token, merchant)
        _require_attached(row)
        return row

    async def replay(self, merchant: Merchant, token: str) -> dict[str, Any]:
        """The payment method an idempotency key is bound to, as it is now (detached too)."""
        row = await self.payment_methods.get(token, merchant)
        if row is None:
            raise NotFound("no such payment_method", reason="resource_missing")
        return row

    async def detach(
        self, merchant: Merchant, token: str, actor: str, key: Claim | None = None
    ) -> dict[str, Any]:
        # The gateway refuses the card before it is destroyed here (see revocations.py).
        _require_attached(await self.payment_methods.get(token, merchant))
        await self._revocations.revoke(merchant, token)
        async with self._engine.begin() as connection:
            row = await repository.find(connection, token, merchant, for_update=True)
            _require_attached(row)
            row = await repository.shred(connection, token)
            if key and not await repository.bind_key(connection, key.bind_params, token):
                raise in_use()  # rolls the detach back
            await repository.add_audit(
                connection,
                actor=actor,
                action="detach",
                result="ok",
                payment_method=token,
                merchant_id=merchant.id,
                details={"crypto_shredded": True},
            )
            await add_event(
                connection,
                self._outbox,
                event_type="payment_method.detached",
                aggregate_type="payment_method",
                aggregate_id=token,
                payload=snapshot(row, *repository.SEALED_COLUMNS),
            )
        self.provisioning.forget_cvc(token)
        return row


class Revocations(Protocol):
    async def revoke(self, merchant: Merchant, payment_method: str) -> None: ...


def _require_attached(row: dict[str, Any] | None) -> None:
    # The messages do not repeat the id: the caller knows it, and logs need not.
    if row is None:
        raise NotFound("no such payment_method", reason="resource_missing")
    if row["detached_at"] is not None:
        raise NotFound(
            "the payment_method was detached; its card data is destroyed",
            reason="payment_method_detached",
        )
