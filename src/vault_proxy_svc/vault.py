"""The vault's use cases: tokenize, read, detach (crypto-shred), and the cards at the PSPs
(`provisioning`). Plain logic over the card store, the key provider and the PSP clients; no
gRPC or SQL here."""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from paymesh.platform.callers import Merchant
from paymesh.platform.idempotency.keys import in_use
from paymesh.platform.idempotency.store import Claim, NewKey
from paymesh.platform.problems import InvalidArgument, NotFound
from paymesh.platform.wire import require_id
from vault_proxy_svc.card_store import CardStore
from vault_proxy_svc.cards import Card
from vault_proxy_svc.cvc_store import CvcStore
from vault_proxy_svc.envelope import binding, fingerprint, seal
from vault_proxy_svc.keys import KeyProvider
from vault_proxy_svc.models import AuditEntry, CardSummary, PaymentMethod, require_attached
from vault_proxy_svc.provisioning import CardProvisioning
from vault_proxy_svc.psp import CardProvisioner

log = structlog.get_logger(__name__)
_ALPHABET = string.ascii_letters + string.digits


_TOKEN_LENGTH = 24
# The most payment methods one GetCardSummaries asks for (a page of the back office's search).
MAX_SUMMARIES = 100
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


def summary_tokens(tokens: Sequence[str]) -> list[str]:
    """The tokens a request for card summaries may ask for, once each, in order: 1 to
    MAX_SUMMARIES ids, each well written (named by its index); an id of another kind is
    simply unknown, and left out."""
    field = "payment_methods"
    if not tokens:
        raise InvalidArgument.for_field(field, "missing", f"{field} is required")
    if len(tokens) > MAX_SUMMARIES:
        raise InvalidArgument.for_field(
            field, "too_many", f"{field} may hold at most {MAX_SUMMARIES} ids"
        )
    wanted: dict[str, None] = {}
    for index, token in enumerate(tokens):
        try:
            wanted[require_id(token, "pm_", "payment_method", f"{field}[{index}]")] = None
        except NotFound:
            continue
    return list(wanted)


class Keks(Protocol):
    """The KEKs as tokenization needs them (`KekManager`)."""

    fingerprint_secret: bytes

    async def primary(self, refresh: bool = False) -> str: ...


class Vault:
    def __init__(
        self,
        cards: CardStore,
        keys: KeyProvider,
        keks: Keks,
        psps: dict[str, CardProvisioner],
        cvcs: CvcStore,
        revocations: Revocations,
    ):
        self._revocations = revocations
        self._keys = keys
        self._keks = keks
        self.cards = cards
        self.provisioning = CardProvisioning(keys, cards, psps, cvcs)

    async def tokenize(
        self,
        merchant: Merchant,
        card: Card,
        billing: dict[str, Any],
        key: Claim | NewKey | None = None,
    ) -> PaymentMethod | None:
        """A new token for the card; with `key`, bound to it in the same statement. None, with
        nothing written, when a NewKey turns out to be used already."""
        token = new_token()
        kek_version = await self._keks.primary()
        sealed = await seal(
            card.number, binding(token, merchant.id, merchant.livemode), self._keys, kek_version
        )
        new = PaymentMethod(
            id=token,
            merchant_id=merchant.id,
            livemode=merchant.livemode,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            fingerprint=fingerprint(self._keks.fingerprint_secret, merchant.id, card.number),
            sealed=sealed,
            billing_details=billing or None,
        )
        audit = AuditEntry(
            actor=f"merchant:{merchant.id}",
            action="tokenize",
            result="ok",
            payment_method=token,
            merchant_id=merchant.id,
            details={"brand": card.brand, "last4": card.last4, "kek": kek_version},
        )
        stored = await self.cards.insert_tokenized(new, audit, key=key)
        if stored is None:
            if isinstance(key, NewKey):
                return None
            raise in_use()
        self.provisioning.hold_cvc_and_provision_ahead(merchant, token, card)
        return stored

    async def get(self, merchant: Merchant, token: str) -> PaymentMethod:
        return require_attached(await self.cards.get(token, merchant))

    async def summaries(self, tokens: Sequence[str]) -> list[CardSummary]:
        """The masked cards among `tokens`, of any merchant, for the back office's screens:
        from their clear columns, never decrypted (so not audited, as a masked `get`)."""
        return await self.cards.summaries(summary_tokens(tokens))

    async def replay(self, merchant: Merchant, token: str) -> PaymentMethod:
        """The payment method an idempotency key is bound to, as it is now (detached too)."""
        card = await self.cards.get(token, merchant)
        if card is None:
            raise NotFound("no such payment_method", reason="resource_missing")
        return card

    async def detach(
        self, merchant: Merchant, token: str, actor: str, key: Claim | None = None
    ) -> PaymentMethod:
        # The gateway refuses the card before it is destroyed here (see revocations.py).
        require_attached(await self.cards.get(token, merchant))
        await self._revocations.revoke(merchant, token)
        audit = AuditEntry(
            actor=actor,
            action="detach",
            result="ok",
            payment_method=token,
            merchant_id=merchant.id,
            details={"crypto_shredded": True},
        )
        detached = await self.cards.detach(token, merchant, audit, key)
        self.provisioning.forget_cvc(token)
        return detached


class Revocations(Protocol):
    async def revoke(self, merchant: Merchant, payment_method: str) -> None: ...
