"""The cards' PSP references, kept in memory so that a charge needs no call to the vault.

A reference never changes for a (payment method, PSP), so a remembered one is never wrong;
what may change is whether the card may still be charged. The vault revokes a payment method
in the gateway's database (CardAccessService.RevokePaymentMethod) before it detaches it, and
an answer from memory is checked against that table, by the charge's reserving statement
itself where it can (PaymentRepository.insert_intent_unless_revoked): a charge requested after
a detach answered is never made, in any gateway process. A miss asks the vault, which refuses
a detached or unknown card itself."""

from __future__ import annotations

import time
from typing import Protocol

from gateway_svc.metrics import CARD_TOKEN_LOOKUPS
from gateway_svc.psp.vault import VaultClient
from paymesh.platform.callers import Merchant


class RevocationCheck(Protocol):
    async def payment_method_revoked(self, payment_method: str) -> bool: ...


class CardTokens:
    def __init__(
        self,
        vault: VaultClient,
        revocations: RevocationCheck,
        ttl_seconds: float = 60.0,
        max_entries: int = 100_000,
    ):
        self._vault = vault
        self._revocations = revocations
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        # (merchant, livemode, payment method, psp) -> (reference, expires at)
        self._entries: dict[tuple[str, bool, str, str], tuple[str, float]] = {}

    def remembered(self, merchant: Merchant, payment_method: str, psp: str) -> str | None:
        """The reference from memory, NOT checked against revocations: only for a caller whose
        next statement checks them (PaymentRepository.insert_intent_unless_revoked)."""
        reference = self._lookup(merchant, payment_method, psp)
        if reference is not None:
            CARD_TOKEN_LOOKUPS.labels("hit").inc()
        return reference

    async def psp_token(
        self, merchant: Merchant, payment_method: str, psp: str, reason: str
    ) -> str:
        """The reference, from memory if the card was not revoked since, else from the vault."""
        reference = self._lookup(merchant, payment_method, psp)
        if reference is None:
            return await self.from_vault(merchant, payment_method, psp, reason)
        if await self._revocations.payment_method_revoked(payment_method):
            return await self.from_vault(merchant, payment_method, psp, reason, revoked=True)
        CARD_TOKEN_LOOKUPS.labels("hit").inc()
        return reference

    def _lookup(self, merchant: Merchant, payment_method: str, psp: str) -> str | None:
        remembered = self._entries.get((merchant.id, merchant.livemode, payment_method, psp))
        if remembered is None or remembered[1] <= time.monotonic():
            return None
        return remembered[0]

    async def from_vault(
        self,
        merchant: Merchant,
        payment_method: str,
        psp: str,
        reason: str,
        revoked: bool = False,
    ) -> str:
        """Asks the vault (which refuses a detached or unknown card) and remembers the answer.
        `revoked`: the card was found revoked since it was remembered."""
        CARD_TOKEN_LOOKUPS.labels("revoked" if revoked else "miss").inc()
        key = (merchant.id, merchant.livemode, payment_method, psp)
        self._entries.pop(key, None)
        reference = await self._vault.psp_token(merchant, payment_method, psp, reason)
        self._remember(key, reference)
        return reference

    async def reprovision(
        self,
        merchant: Merchant,
        payment_method: str,
        psp: str,
        unknown_reference: str,
        reason: str,
    ) -> str:
        """The card's new reference at a PSP that said it does not know `unknown_reference`
        (made by the vault from the card it holds), remembered in place of the old one."""
        key = (merchant.id, merchant.livemode, payment_method, psp)
        self._entries.pop(key, None)
        reference = await self._vault.reprovision(
            merchant, payment_method, psp, unknown_reference, reason
        )
        self._remember(key, reference)
        return reference

    def _remember(self, key: tuple[str, bool, str, str], reference: str) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (reference, time.monotonic() + self._ttl)

    def forget(self, payment_method: str) -> None:
        for key in [key for key in self._entries if key[2] == payment_method]:
            del self._entries[key]
