"""The in-memory twin of `PostgresCardStore`: the same methods and the same rules (a card
only its merchant, in its mode, can see; an idempotency key bound by the write that makes or
detaches the card, nothing written when the key is not the request's; audit rows and events
written only with the change they describe; the first PSP reference cached wins unless it is
the one being replaced; nothing cached for a detached card), in dictionaries. For unit tests
of the use cases; tests/support/card_store_contract.py holds both stores to one suite
(tests/unit runs it on this twin, tests/integration on PostgreSQL)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from paymesh.platform.callers import Merchant
from paymesh.platform.idempotency.keys import in_use
from paymesh.platform.idempotency.store import Claim, NewKey
from vault_proxy_svc.models import (
    SEALED_COLUMNS,
    AuditEntry,
    CachedReference,
    CardAtPsp,
    CardSummary,
    PaymentMethod,
    require_attached,
)


@dataclass
class StoredKey:
    state: str  # running | done
    fence: datetime | None = None  # when the running request took it (Claim.fence)
    object_id: str | None = None


@dataclass(frozen=True)
class Event:
    event_type: str
    aggregate_id: str
    payload: dict[str, Any]  # the card as the change left it, its sealed number left out


class InMemoryCardStore:
    def __init__(self) -> None:
        self.cards: dict[str, PaymentMethod] = {}
        self.psp_references: dict[tuple[str, str], str] = {}  # (token, psp) -> reference
        self.audits: list[AuditEntry] = []
        self.events: list[Event] = []
        self.keys: dict[tuple[str, bool, str], StoredKey] = {}
        self._last = datetime.min.replace(tzinfo=UTC)

    # --- reads ---------------------------------------------------------------------------

    async def get(self, token: str, merchant: Merchant) -> PaymentMethod | None:
        return self._owned(token, merchant)

    async def psp_reference(
        self, token: str, merchant: Merchant, psp: str
    ) -> CachedReference | None:
        card = self._owned(token, merchant)
        if card is None:
            return None
        return CachedReference(card.detached_at, self.psp_references.get((token, psp)))

    async def get_with_psp_reference(
        self, token: str, merchant: Merchant, psp: str
    ) -> CardAtPsp | None:
        card = self._owned(token, merchant)
        if card is None:
            return None
        return CardAtPsp(card, self.psp_references.get((token, psp)))

    async def summaries(self, tokens: Sequence[str]) -> list[CardSummary]:
        return [
            CardSummary(
                card.id, card.brand, card.last4, card.fingerprint, card.exp_month, card.exp_year
            )
            for card in (self.cards.get(token) for token in dict.fromkeys(tokens))
            if card is not None
        ]

    async def psps_holding(self, token: str) -> set[str]:
        return {psp for (card, psp) in self.psp_references if card == token}

    # --- writes --------------------------------------------------------------------------

    async def insert_tokenized(
        self, card: PaymentMethod, audit: AuditEntry, key: Claim | NewKey | None = None
    ) -> PaymentMethod | None:
        if card.id in self.cards:
            raise ValueError(f"duplicate payment method id {card.id!r}")
        if isinstance(key, Claim) and not self._holds(key):
            return None
        if isinstance(key, NewKey):
            if _pk(key.merchant, key.key) in self.keys:
                return None
            self.keys[_pk(key.merchant, key.key)] = StoredKey("done", object_id=card.id)
        elif key is not None:
            self._bind(key, card.id)
        stored = card.replace(created_at=self._now(), detached_at=None)
        self.cards[stored.id] = stored
        self.audits.append(audit)
        self.events.append(Event("payment_method.created", stored.id, _snapshot(stored)))
        return stored

    async def detach(
        self, token: str, merchant: Merchant, audit: AuditEntry, key: Claim | None = None
    ) -> PaymentMethod:
        require_attached(self._owned(token, merchant))
        if key and not self._holds(key):
            raise in_use()
        if key:
            self._bind(key, token)
        shredded = self.cards[token].replace(sealed=None, detached_at=self._now())
        self.cards[token] = shredded
        for held in [held for held in self.psp_references if held[0] == token]:
            del self.psp_references[held]
        self.audits.append(audit)
        self.events.append(Event("payment_method.detached", token, _snapshot(shredded)))
        return shredded

    async def save_psp_reference(
        self,
        token: str,
        psp: str,
        reference: str,
        audit: AuditEntry,
        replacing: str | None = None,
    ) -> str | None:
        card = self.cards.get(token)
        if card is not None and card.detached:
            return None
        cached = self.psp_references.get((token, psp))
        if cached is None or (replacing is not None and cached == replacing):
            self.psp_references[(token, psp)] = reference
        saved = self.psp_references[(token, psp)]
        self.audits.append(
            dataclasses.replace(audit, details={**audit.details, "psp_reference": saved})
        )
        return saved

    async def add_audit(self, entry: AuditEntry) -> None:
        self.audits.append(entry)

    # --- idempotency keys ----------------------------------------------------------------

    def open_key(self, merchant: Merchant, key: str) -> Claim:
        """What a claim does: the key is `running`, held by the request, bound to nothing."""
        fence = self._now()
        self.keys[_pk(merchant, key)] = StoredKey("running", fence=fence)
        return Claim(merchant, key, fence=fence)

    def take_over(self, claim: Claim) -> None:
        """Another request takes the key over (as after the first one's lease lapsed)."""
        assert claim.key is not None
        self.keys[_pk(claim.merchant, claim.key)].fence = self._now()

    def _holds(self, claim: Claim) -> bool:
        assert claim.key is not None
        stored = self.keys.get(_pk(claim.merchant, claim.key))
        return stored is not None and stored.state == "running" and stored.fence == claim.fence

    def _bind(self, claim: Claim, object_id: str) -> None:
        assert claim.key is not None
        stored = self.keys[_pk(claim.merchant, claim.key)]
        stored.state, stored.object_id = "done", object_id

    def _now(self) -> datetime:
        # Strictly increasing: a fence taken over differs from the one it replaced.
        self._last = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
        return self._last

    def _owned(self, token: str, merchant: Merchant) -> PaymentMethod | None:
        card = self.cards.get(token)
        if card is None or (card.merchant_id, card.livemode) != (merchant.id, merchant.livemode):
            return None
        return card


def _pk(merchant: Merchant, key: str) -> tuple[str, bool, str]:
    return (merchant.id, merchant.livemode, key)


def _snapshot(card: PaymentMethod) -> dict[str, Any]:
    columns = {k: v for k, v in card.columns().items() if k not in SEALED_COLUMNS}
    return {**columns, "created_at": card.created_at}
