"""What the vault's use cases ask of its cards: each write one transaction with its audit row
and outbox event, an idempotency key bound by the statement that makes or detaches the card.
`PostgresCardStore` keeps them in PostgreSQL, `InMemoryCardStore` in dictionaries (unit
tests); tests/support/card_store_contract.py holds both to the same rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from paymesh.platform.callers import Merchant
from paymesh.platform.idempotency.store import Claim, NewKey
from vault_proxy_svc.models import (
    AuditEntry,
    CachedReference,
    CardAtPsp,
    CardSummary,
    PaymentMethod,
)


class CardStore(Protocol):
    async def get(self, token: str, merchant: Merchant) -> PaymentMethod | None:
        """The merchant's card in the merchant's mode; another's is as good as missing."""

    async def psp_reference(
        self, token: str, merchant: Merchant, psp: str
    ) -> CachedReference | None:
        """Whether the merchant's card was detached, and its cached reference at `psp`;
        None if there is no such card. The hot path: two small columns."""

    async def get_with_psp_reference(
        self, token: str, merchant: Merchant, psp: str
    ) -> CardAtPsp | None:
        """The merchant's card with its cached reference at `psp`, in one read."""

    async def summaries(self, tokens: Sequence[str]) -> list[CardSummary]:
        """The masked cards of `tokens`, of any merchant (detached ones too), from their clear
        columns only: the sealed number is never read. Unknown tokens are left out."""

    async def psps_holding(self, token: str) -> set[str]:
        """The PSPs that have a reference for the card."""

    async def insert_tokenized(
        self, card: PaymentMethod, audit: AuditEntry, key: Claim | NewKey | None = None
    ) -> PaymentMethod | None:
        """The new card (as stored), its audit row and its `payment_method.created` event.
        With a held `key` (Claim) the key is bound to the card, with a `NewKey` the key is
        stored done and bound to it; either way None, and nothing written, if the key is not
        the request's (taken over, or used before)."""

    async def detach(
        self, token: str, merchant: Merchant, audit: AuditEntry, key: Claim | None = None
    ) -> PaymentMethod:
        """Crypto-shreds the card (its sealed number and PSP references destroyed), with its
        audit row, its `payment_method.detached` event and `key` bound to it; returns it as
        left. NotFound if there is no such card or it was detached already (under the card's
        lock), Conflict (idempotency_key_in_use) if `key` was taken over: nothing changed."""

    async def save_psp_reference(
        self,
        token: str,
        psp: str,
        reference: str,
        audit: AuditEntry,
        replacing: str | None = None,
    ) -> str | None:
        """Caches the card's reference at `psp` and returns the one cached: if another was
        cached first, that one wins, unless it is `replacing` (the reference the PSP lost),
        which `reference` replaces. With it the audit row, its details completed with the
        reference cached. None, and nothing written, if the card was detached (the card is
        locked against a concurrent detach meanwhile)."""

    async def add_audit(self, entry: AuditEntry) -> None:
        """An audit row on its own (a decryption on record before it happens, a failed
        creation at a PSP)."""
