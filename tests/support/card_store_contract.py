"""One contract, two card stores: every rule of the vault's persistence runs against the
PostgreSQL `PostgresCardStore` (tests/integration/test_vault_card_store_contract.py) and its
in-memory twin (tests/unit/test_vault_card_store.py), so unit tests of the vault's use cases
on the twin (tests/unit/test_vault_use_cases.py) test the real thing's behaviour.

A scenario gets an `arena`: the store, hands that hold idempotency keys as a claim would,
and eyes on what the store wrote. Card numbers here are sealed stand-ins: no store ever sees
a number in clear."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import pytest

from paymesh.platform.callers import Merchant
from paymesh.platform.idempotency.store import Claim, NewKey
from paymesh.platform.problems import Conflict, NotFound
from vault_proxy_svc.envelope import Sealed
from vault_proxy_svc.memory_card_store import InMemoryCardStore
from vault_proxy_svc.models import (
    SEALED_COLUMNS,
    AuditEntry,
    CachedReference,
    CardSummary,
    PaymentMethod,
)


class Arena(Protocol):
    store: Any  # a CardStore

    def open_key(self, merchant: Merchant, key: str) -> Claim:
        """A key `running`, held by the request the returned claim stands for."""

    def take_over(self, claim: Claim) -> None:
        """Another request takes the claim's key over."""

    def key_state(self, merchant: Merchant, key: str) -> tuple[str, str | None] | None:
        """(state, object bound) of the key, None if there is no such key."""

    def audits(self, token: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(action, result, details) of the card's audit rows, oldest first."""

    def events(self, token: str) -> list[tuple[str, dict[str, Any]]]:
        """(event type, the card as the event shows it) of the card's events, oldest first."""


class MemoryArena:
    def __init__(self) -> None:
        self.store = InMemoryCardStore()

    def open_key(self, merchant: Merchant, key: str) -> Claim:
        return self.store.open_key(merchant, key)

    def take_over(self, claim: Claim) -> None:
        self.store.take_over(claim)

    def key_state(self, merchant: Merchant, key: str) -> tuple[str, str | None] | None:
        stored = self.store.keys.get((merchant.id, merchant.livemode, key))
        return None if stored is None else (stored.state, stored.object_id)

    def audits(self, token: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (a.action, a.result, a.details) for a in self.store.audits if a.payment_method == token
        ]

    def events(self, token: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e.event_type, e.payload) for e in self.store.events if e.aggregate_id == token]


# --- what the scenarios use -------------------------------------------------------------


def _merchant() -> Merchant:
    return Merchant("acct_" + uuid.uuid4().hex[:16], False)


def _card(merchant: Merchant, **changes: Any) -> PaymentMethod:
    card = PaymentMethod(
        id="pm_" + uuid.uuid4().hex[:24],
        merchant_id=merchant.id,
        livemode=merchant.livemode,
        brand="visa",
        last4="4242",
        exp_month=12,
        exp_year=2040,
        fingerprint=uuid.uuid4().hex,
        sealed=Sealed("kek_1", b"wrapped-data-key", b"nonce-12byte", b"sealed-number"),
        billing_details={"name": "Ada Lovelace"},
    )
    return card.replace(**changes)


def _tokenize_audit(card: PaymentMethod) -> AuditEntry:
    return AuditEntry(
        actor=f"merchant:{card.merchant_id}",
        action="tokenize",
        result="ok",
        payment_method=card.id,
        merchant_id=card.merchant_id,
        details={"brand": card.brand, "last4": card.last4},
    )


def _detach_audit(card: PaymentMethod) -> AuditEntry:
    return AuditEntry(
        actor=f"merchant:{card.merchant_id}",
        action="detach",
        result="ok",
        payment_method=card.id,
        merchant_id=card.merchant_id,
        details={"crypto_shredded": True},
    )


def _provision_audit(card: PaymentMethod, psp: str) -> AuditEntry:
    return AuditEntry(
        actor="service:gateway",
        action="provision",
        result="ok",
        payment_method=card.id,
        merchant_id=card.merchant_id,
        reason="test",
        details={"psp": psp},
    )


async def _tokenized(arena: Arena, merchant: Merchant, **changes: Any) -> PaymentMethod:
    card = _card(merchant, **changes)
    stored = await arena.store.insert_tokenized(card, _tokenize_audit(card))
    assert stored is not None
    return stored


# --- scenarios ----------------------------------------------------------------------------


async def a_tokenized_card_reads_back_as_written_for_its_merchant_only(arena: Arena) -> None:
    merchant = _merchant()
    card = _card(merchant)
    stored = await arena.store.insert_tokenized(card, _tokenize_audit(card))
    assert stored is not None and stored.created_at is not None
    assert stored.replace(created_at=None) == card
    assert await arena.store.get(card.id, merchant) == stored
    assert await arena.store.get(card.id, _merchant()) is None
    assert await arena.store.get(card.id, Merchant(merchant.id, True)) is None
    assert await arena.store.get("pm_" + "0" * 24, merchant) is None


async def a_tokenization_writes_its_audit_row_and_an_event_without_the_sealed_number(
    arena: Arena,
) -> None:
    card = await _tokenized(arena, _merchant(), billing_details=None)
    assert arena.audits(card.id) == [("tokenize", "ok", {"brand": "visa", "last4": "4242"})]
    [(event_type, shown)] = arena.events(card.id)
    assert event_type == "payment_method.created"
    assert shown["id"] == card.id and shown["last4"] == "4242" and shown["detached_at"] is None
    assert not set(SEALED_COLUMNS) & set(shown)
    assert PaymentMethod.of(shown).replace(created_at=None) == card.replace(
        sealed=None, created_at=None
    )


async def a_new_key_is_stored_done_and_bound_by_the_first_tokenization_only(
    arena: Arena,
) -> None:
    merchant = _merchant()
    key = NewKey(merchant, "key-" + uuid.uuid4().hex, "request-hash")
    first = _card(merchant)
    assert await arena.store.insert_tokenized(first, _tokenize_audit(first), key) is not None
    assert arena.key_state(merchant, key.key) == ("done", first.id)

    again = _card(merchant)
    assert await arena.store.insert_tokenized(again, _tokenize_audit(again), key) is None
    assert await arena.store.get(again.id, merchant) is None
    assert arena.audits(again.id) == [] and arena.events(again.id) == []
    assert arena.key_state(merchant, key.key) == ("done", first.id)


async def a_held_key_is_bound_to_the_card_and_a_lost_one_writes_nothing(arena: Arena) -> None:
    merchant = _merchant()
    held = arena.open_key(merchant, "key-" + uuid.uuid4().hex)
    card = _card(merchant)
    assert await arena.store.insert_tokenized(card, _tokenize_audit(card), held) is not None
    assert arena.key_state(merchant, held.key or "") == ("done", card.id)

    lost = arena.open_key(merchant, "key-" + uuid.uuid4().hex)
    arena.take_over(lost)
    other = _card(merchant)
    assert await arena.store.insert_tokenized(other, _tokenize_audit(other), lost) is None
    assert await arena.store.get(other.id, merchant) is None
    assert arena.audits(other.id) == [] and arena.events(other.id) == []
    assert arena.key_state(merchant, lost.key or "") == ("running", None)


async def a_detach_shreds_the_card_and_its_psp_references_with_audit_and_event(
    arena: Arena,
) -> None:
    merchant = _merchant()
    card = await _tokenized(arena, merchant)
    await arena.store.save_psp_reference(
        card.id, "stripe", "pm_psp_1", _provision_audit(card, "stripe")
    )

    detached = await arena.store.detach(card.id, merchant, _detach_audit(card))
    assert detached.sealed is None and detached.detached_at is not None
    assert detached.replace(detached_at=None) == card.replace(sealed=None)
    assert await arena.store.get(card.id, merchant) == detached
    assert await arena.store.psps_holding(card.id) == set()
    cached = await arena.store.psp_reference(card.id, merchant, "stripe")
    assert cached is not None and cached.detached and cached.psp_reference is None
    assert [a[:2] for a in arena.audits(card.id)][-1] == ("detach", "ok")
    event_type, shown = arena.events(card.id)[-1]
    assert event_type == "payment_method.detached"
    assert shown["detached_at"] is not None and not set(SEALED_COLUMNS) & set(shown)


async def a_detach_refuses_a_card_missing_detached_or_another_merchants(arena: Arena) -> None:
    merchant = _merchant()
    card = await _tokenized(arena, merchant)
    with pytest.raises(NotFound) as other:
        await arena.store.detach(card.id, _merchant(), _detach_audit(card))
    assert other.value.reason == "resource_missing"
    await arena.store.detach(card.id, merchant, _detach_audit(card))
    with pytest.raises(NotFound) as again:
        await arena.store.detach(card.id, merchant, _detach_audit(card))
    assert again.value.reason == "payment_method_detached"
    assert [a[0] for a in arena.audits(card.id)] == ["tokenize", "detach"]
    assert [e[0] for e in arena.events(card.id)] == [
        "payment_method.created",
        "payment_method.detached",
    ]


async def a_detach_binds_a_held_key_and_under_a_lost_one_changes_nothing(arena: Arena) -> None:
    merchant = _merchant()
    card = await _tokenized(arena, merchant)
    lost = arena.open_key(merchant, "key-" + uuid.uuid4().hex)
    arena.take_over(lost)
    with pytest.raises(Conflict) as refused:
        await arena.store.detach(card.id, merchant, _detach_audit(card), lost)
    assert refused.value.reason == "idempotency_key_in_use"
    assert await arena.store.get(card.id, merchant) == card
    assert [a[0] for a in arena.audits(card.id)] == ["tokenize"]
    assert arena.key_state(merchant, lost.key or "") == ("running", None)

    held = arena.open_key(merchant, "key-" + uuid.uuid4().hex)
    detached = await arena.store.detach(card.id, merchant, _detach_audit(card), held)
    assert detached.detached
    assert arena.key_state(merchant, held.key or "") == ("done", card.id)


async def the_first_psp_reference_cached_wins_unless_it_is_the_one_replaced(
    arena: Arena,
) -> None:
    merchant = _merchant()
    card = await _tokenized(arena, merchant)
    audit = _provision_audit(card, "stripe")
    assert await arena.store.psp_reference(card.id, merchant, "stripe") == CachedReference(
        None, None
    )
    assert await arena.store.save_psp_reference(card.id, "stripe", "ref_1", audit) == "ref_1"
    assert await arena.store.save_psp_reference(card.id, "stripe", "ref_2", audit) == "ref_1"
    # Replacing a reference that is not the cached one: the cached one stays.
    stale = await arena.store.save_psp_reference(
        card.id, "stripe", "ref_3", audit, replacing="ref_0"
    )
    assert stale == "ref_1"
    fresh = await arena.store.save_psp_reference(
        card.id, "stripe", "ref_4", audit, replacing="ref_1"
    )
    assert fresh == "ref_4"
    assert await arena.store.psp_reference(card.id, merchant, "stripe") == CachedReference(
        None, "ref_4"
    )
    assert await arena.store.psp_reference(card.id, _merchant(), "stripe") is None
    at_psp = await arena.store.get_with_psp_reference(card.id, merchant, "stripe")
    assert at_psp is not None and (at_psp.card, at_psp.psp_reference) == (card, "ref_4")
    elsewhere = await arena.store.get_with_psp_reference(card.id, merchant, "sandbox")
    assert elsewhere is not None and elsewhere.psp_reference is None
    assert await arena.store.psps_holding(card.id) == {"stripe"}
    await arena.store.save_psp_reference(
        card.id, "sandbox", "sb_1", _provision_audit(card, "sandbox")
    )
    assert await arena.store.psps_holding(card.id) == {"stripe", "sandbox"}
    # Each caching is audited with the reference that was cached.
    provisioned = [a[2]["psp_reference"] for a in arena.audits(card.id) if a[0] == "provision"]
    assert provisioned == ["ref_1", "ref_1", "ref_1", "ref_4", "sb_1"]


async def nothing_is_cached_for_a_detached_card(arena: Arena) -> None:
    merchant = _merchant()
    card = await _tokenized(arena, merchant)
    await arena.store.detach(card.id, merchant, _detach_audit(card))
    audit = _provision_audit(card, "stripe")
    assert await arena.store.save_psp_reference(card.id, "stripe", "ref_1", audit) is None
    assert await arena.store.psps_holding(card.id) == set()
    assert [a[0] for a in arena.audits(card.id)] == ["tokenize", "detach"]


async def an_audit_row_stands_on_its_own(arena: Arena) -> None:
    card = await _tokenized(arena, _merchant())
    decrypt = AuditEntry(
        actor="service:gateway",
        action="decrypt",
        result="ok",
        payment_method=card.id,
        merchant_id=card.merchant_id,
        reason="test",
        details={"purpose": "provision:stripe"},
    )
    await arena.store.add_audit(decrypt)
    assert arena.audits(card.id)[-1] == ("decrypt", "ok", {"purpose": "provision:stripe"})


async def a_missing_card_has_no_psp_reference(arena: Arena) -> None:
    merchant = _merchant()
    missing = "pm_" + uuid.uuid4().hex[:24]
    assert await arena.store.psp_reference(missing, merchant, "stripe") is None
    assert await arena.store.get_with_psp_reference(missing, merchant, "stripe") is None
    assert await arena.store.psps_holding(missing) == set()


async def card_summaries_are_masked_of_any_merchant_and_leave_the_unknown_out(
    arena: Arena,
) -> None:
    mine = await _tokenized(arena, _merchant())
    theirs = await _tokenized(arena, _merchant(), brand="mastercard", last4="4444", exp_year=2041)
    shredded = await _tokenized(arena, _merchant())
    await arena.store.detach(shredded.id, _merchant_of(shredded), _detach_audit(shredded))
    unknown = "pm_" + uuid.uuid4().hex[:24]

    found = await arena.store.summaries([theirs.id, unknown, mine.id, shredded.id])

    assert sorted(found, key=lambda c: c.payment_method) == sorted(
        [_summary_of(mine), _summary_of(theirs), _summary_of(shredded)],
        key=lambda c: c.payment_method,
    )
    assert await arena.store.summaries([unknown]) == []
    # A masked read writes nothing: no audit row beyond the card's own.
    assert [action for action, _, _ in arena.audits(mine.id)] == ["tokenize"]


def _merchant_of(card: PaymentMethod) -> Merchant:
    return Merchant(card.merchant_id, card.livemode)


def _summary_of(card: PaymentMethod) -> CardSummary:
    return CardSummary(
        card.id, card.brand, card.last4, card.fingerprint, card.exp_month, card.exp_year
    )


SCENARIOS = [
    a_tokenized_card_reads_back_as_written_for_its_merchant_only,
    a_tokenization_writes_its_audit_row_and_an_event_without_the_sealed_number,
    a_new_key_is_stored_done_and_bound_by_the_first_tokenization_only,
    a_held_key_is_bound_to_the_card_and_a_lost_one_writes_nothing,
    a_detach_shreds_the_card_and_its_psp_references_with_audit_and_event,
    a_detach_refuses_a_card_missing_detached_or_another_merchants,
    a_detach_binds_a_held_key_and_under_a_lost_one_changes_nothing,
    the_first_psp_reference_cached_wins_unless_it_is_the_one_replaced,
    nothing_is_cached_for_a_detached_card,
    an_audit_row_stands_on_its_own,
    a_missing_card_has_no_psp_reference,
    card_summaries_are_masked_of_any_merchant_and_leave_the_unknown_out,
]
