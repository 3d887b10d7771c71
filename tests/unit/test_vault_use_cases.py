"""The vault's use cases (vault.py, provisioning.py) on the in-memory card store, which
tests/support/card_store_contract.py holds to the PostgreSQL store's rules: what tokenize,
detach and the cards at the PSPs decide, without a mesh. The PSPs and the gateway's
revocation are stand-ins that record what they were asked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from paymesh.platform.callers import Merchant
from paymesh.platform.idempotency.store import NewKey
from paymesh.platform.problems import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from tests.support import cards
from vault_proxy_svc.cards import Card
from vault_proxy_svc.cvc_store import CvcStore
from vault_proxy_svc.envelope import binding, unseal
from vault_proxy_svc.keys import LocalKeyring
from vault_proxy_svc.memory_card_store import InMemoryCardStore
from vault_proxy_svc.psp import PspRejected, PspUnavailable
from vault_proxy_svc.vault import Vault

MERCHANT = Merchant("acct_twin", False)


@dataclass
class Keks:
    version: str
    fingerprint_secret: bytes = b"f" * 32

    async def primary(self, refresh: bool = False) -> str:
        return self.version


@dataclass
class Created:
    number: str
    cvc: str | None
    idempotency_key: str
    card_on_file: bool


@dataclass
class PspCards:
    """A PSP that makes a reference per card, or fails as told."""

    psp: str
    created: list[Created] = field(default_factory=list)
    fails_with: Exception | None = None
    meanwhile: object = None  # a coroutine function run while the card is being created

    async def create(
        self, card: Card, cvc: str | None, idempotency_key: str, card_on_file: bool = False
    ) -> str:
        if self.meanwhile is not None:
            await self.meanwhile()  # type: ignore[operator]
        if self.fails_with is not None:
            raise self.fails_with
        self.created.append(Created(card.number, cvc, idempotency_key, card_on_file))
        return f"{self.psp}_ref_{len(self.created)}"

    async def close(self) -> None:
        pass


@dataclass
class Revocations:
    revoked: list[str] = field(default_factory=list)
    unreachable: bool = False

    async def revoke(self, merchant: Merchant, payment_method: str) -> None:
        if self.unreachable:
            raise Unavailable("gateway down", reason="gateway_unavailable")
        self.revoked.append(payment_method)


@dataclass
class World:
    vault: Vault
    store: InMemoryCardStore
    keys: LocalKeyring
    cvcs: CvcStore
    stripe: PspCards
    sandbox: PspCards
    revocations: Revocations
    kek_version: str

    def audits(self, token: str) -> list[tuple[str, str]]:
        return [(a.action, a.result) for a in self.store.audits if a.payment_method == token]


@pytest.fixture
def world(tmp_path) -> World:
    LocalKeyring.create_file(tmp_path / "keyring.json")
    keys = LocalKeyring(tmp_path / "keyring.json")
    version = asyncio.run(keys.create_version())
    store = InMemoryCardStore()
    cvcs = CvcStore(ttl_seconds=300)
    stripe, sandbox, revocations = PspCards("stripe"), PspCards("sandbox"), Revocations()
    vault = Vault(
        store,
        keys,
        Keks(version),
        {"stripe": stripe, "sandbox": sandbox},
        cvcs,
        revocations,
    )
    return World(vault, store, keys, cvcs, stripe, sandbox, revocations, version)


def _card(number: str = cards.VISA, cvc: str = "") -> Card:
    return Card(number, 12, 2040, cvc, "visa")


async def _settled() -> None:
    """Lets the background creations ahead of failover finish."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    await asyncio.gather(*others)


# --- tokenize -------------------------------------------------------------------------------


def test_a_card_is_stored_sealed_under_the_primary_kek_and_never_in_clear(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {"name": "Ada"})
        assert stored is not None and stored.sealed is not None
        assert stored.sealed.kek_version == world.kek_version
        assert cards.VISA.encode() not in stored.sealed.ciphertext
        context = binding(stored.id, MERCHANT.id, MERCHANT.livemode)
        assert await unseal(stored.sealed, context, world.keys) == cards.VISA
        assert (stored.last4, stored.billing_details) == ("4242", {"name": "Ada"})
        assert await world.vault.get(MERCHANT, stored.id) == stored
        # Nothing the store wrote holds the number.
        written = repr(world.store.audits) + repr(world.store.events)
        assert cards.VISA not in written
        assert world.audits(stored.id) == [("tokenize", "ok")]
        assert [e.event_type for e in world.store.events] == ["payment_method.created"]

    asyncio.run(main())


def test_one_number_has_one_fingerprint_per_merchant_and_another_at_another_merchant(world):
    async def main():
        first = await world.vault.tokenize(MERCHANT, _card(), {})
        again = await world.vault.tokenize(MERCHANT, _card(), {})
        other_card = await world.vault.tokenize(MERCHANT, _card(cards.MASTERCARD), {})
        elsewhere = await world.vault.tokenize(Merchant("acct_other", False), _card(), {})
        assert first and again and other_card and elsewhere
        assert first.id != again.id  # a token per tokenization: no dedupe of the card itself
        assert first.fingerprint == again.fingerprint
        assert other_card.fingerprint != first.fingerprint
        assert elsewhere.fingerprint != first.fingerprint
        assert cards.VISA not in first.fingerprint

    asyncio.run(main())


def test_a_used_new_key_writes_nothing_and_a_lost_claim_is_in_use(world):
    async def main():
        key = NewKey(MERCHANT, "key-1", "hash")
        first = await world.vault.tokenize(MERCHANT, _card(), {}, key)
        assert first is not None
        assert await world.vault.tokenize(MERCHANT, _card(), {}, key) is None
        lost = world.store.open_key(MERCHANT, "key-2")
        world.store.take_over(lost)
        with pytest.raises(Conflict) as refused:
            await world.vault.tokenize(MERCHANT, _card(), {}, lost)
        assert refused.value.reason == "idempotency_key_in_use"
        assert list(world.store.cards) == [first.id]

    asyncio.run(main())


def test_a_card_with_a_cvc_goes_to_every_psp_ahead_and_its_cvc_is_then_forgotten(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(cvc="123"), {})
        assert stored is not None
        await _settled()
        for psp in (world.stripe, world.sandbox):
            [created] = psp.created
            assert (created.cvc, created.card_on_file) == ("123", False)
            assert created.idempotency_key == f"vault-{stored.id}-{psp.psp}"
        assert await world.store.psps_holding(stored.id) == {"stripe", "sandbox"}
        assert world.cvcs.peek(stored.id) is None
        # The card in hand: nothing was decrypted for it.
        assert ("decrypt", "ok") not in world.audits(stored.id)

    asyncio.run(main())


def test_a_card_without_a_cvc_waits_for_its_first_charge(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None
        await _settled()
        assert world.stripe.created == [] and world.sandbox.created == []

    asyncio.run(main())


def test_the_cvc_is_kept_until_every_psp_holds_the_card(world):
    async def main():
        world.sandbox.fails_with = PspUnavailable("down")
        stored = await world.vault.tokenize(MERCHANT, _card(cvc="123"), {})
        assert stored is not None
        await _settled()
        assert world.cvcs.peek(stored.id) == "123"
        world.sandbox.fails_with = None
        await world.vault.provisioning.psp_token(MERCHANT, stored.id, "sandbox", "svc", "t")
        assert world.sandbox.created[-1].cvc == "123"
        assert world.cvcs.peek(stored.id) is None

    asyncio.run(main())


# --- read and detach ------------------------------------------------------------------------


def test_a_detached_card_is_not_found_but_a_replay_shows_it(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None
        await world.vault.detach(MERCHANT, stored.id, "merchant:acct_twin")
        with pytest.raises(NotFound) as gone:
            await world.vault.get(MERCHANT, stored.id)
        assert gone.value.reason == "payment_method_detached"
        assert (await world.vault.replay(MERCHANT, stored.id)).detached
        with pytest.raises(NotFound) as missing:
            await world.vault.replay(MERCHANT, "pm_" + "0" * 24)
        assert missing.value.reason == "resource_missing"

    asyncio.run(main())


def test_card_summaries_are_masked_and_never_decrypt(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None
        # A card whose sealed number cannot be read still has its summary: none is read.
        world.store.cards[stored.id] = stored.replace(sealed=None)

        [summary] = await world.vault.summaries([stored.id, "pm_" + "0" * 24, "card_x"])

        assert (summary.payment_method, summary.brand, summary.last4) == (
            stored.id,
            "visa",
            "4242",
        )
        assert summary.fingerprint == stored.fingerprint
        assert (summary.exp_month, summary.exp_year) == (12, 2040)
        assert world.audits(stored.id) == [("tokenize", "ok")]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("tokens", "field", "reason"),
    [
        ([], "payment_methods", "missing"),
        (["pm_" + str(n) for n in range(101)], "payment_methods", "too_many"),
        (["pm_ok", ""], "payment_methods[1]", "missing"),
        (["pm_4242 4242"], "payment_methods[0]", "invalid_characters"),
    ],
)
def test_card_summaries_refuse_a_bad_list_naming_the_field(world, tokens, field, reason):
    with pytest.raises(InvalidArgument) as refused:
        asyncio.run(world.vault.summaries(tokens))

    [violation] = refused.value.violations
    assert (violation.field, violation.reason) == (field, reason)


def test_a_detach_revokes_at_the_gateway_then_shreds_and_forgets_the_cvc(world):
    async def main():
        world.sandbox.fails_with = PspUnavailable("down")  # the CVC stays held
        stored = await world.vault.tokenize(MERCHANT, _card(cvc="123"), {})
        assert stored is not None
        await _settled()
        detached = await world.vault.detach(MERCHANT, stored.id, "merchant:acct_twin")
        assert world.revocations.revoked == [stored.id]
        assert detached.sealed is None and detached.detached
        assert world.cvcs.peek(stored.id) is None
        assert await world.store.psps_holding(stored.id) == set()
        assert world.audits(stored.id)[-1] == ("detach", "ok")

    asyncio.run(main())


def test_a_detach_the_gateway_cannot_hear_of_changes_nothing(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None
        world.revocations.unreachable = True
        with pytest.raises(Unavailable) as refused:
            await world.vault.detach(MERCHANT, stored.id, "merchant:acct_twin")
        assert refused.value.reason == "gateway_unavailable"
        assert await world.vault.get(MERCHANT, stored.id) == stored
        assert world.audits(stored.id) == [("tokenize", "ok")]

    asyncio.run(main())


def test_a_card_missing_or_detached_already_is_not_revoked_again(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None
        with pytest.raises(NotFound):
            await world.vault.detach(Merchant("acct_other", False), stored.id, "merchant:x")
        await world.vault.detach(MERCHANT, stored.id, "merchant:acct_twin")
        with pytest.raises(NotFound) as again:
            await world.vault.detach(MERCHANT, stored.id, "merchant:acct_twin")
        assert again.value.reason == "payment_method_detached"
        assert world.revocations.revoked == [stored.id]

    asyncio.run(main())


# --- the cards at the PSPs ------------------------------------------------------------------


def test_a_psp_without_the_card_gets_it_decrypted_once_then_the_cache_answers(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None
        provisioning = world.vault.provisioning
        first = await provisioning.psp_token(MERCHANT, stored.id, "stripe", "service:gw", "t")
        again = await provisioning.psp_token(MERCHANT, stored.id, "stripe", "service:gw", "t")
        assert first == ("stripe_ref_1", False) and again == ("stripe_ref_1", True)
        [created] = world.stripe.created
        assert (created.number, created.cvc) == (cards.VISA, None)
        # The decryption is on record before the creation; neither holds the number.
        assert world.audits(stored.id) == [
            ("tokenize", "ok"),
            ("decrypt", "ok"),
            ("provision", "ok"),
        ]
        provision = world.store.audits[-1]
        assert provision.details == {
            "psp": "stripe",
            "with_cvc": False,
            "psp_reference": "stripe_ref_1",
        }
        assert cards.VISA not in repr(world.store.audits)

    asyncio.run(main())


def test_a_psp_token_for_an_unknown_psp_or_a_card_not_attached_is_refused(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None
        provisioning = world.vault.provisioning
        with pytest.raises(InvalidArgument):
            await provisioning.psp_token(MERCHANT, stored.id, "adyen", "service:gw", "t")
        with pytest.raises(NotFound) as missing:
            await provisioning.psp_token(MERCHANT, "pm_" + "0" * 24, "stripe", "s", "t")
        assert missing.value.reason == "resource_missing"
        await world.vault.detach(MERCHANT, stored.id, "merchant:acct_twin")
        with pytest.raises(NotFound) as gone:
            await provisioning.psp_token(MERCHANT, stored.id, "stripe", "service:gw", "t")
        assert gone.value.reason == "payment_method_detached"
        assert world.stripe.created == []

    asyncio.run(main())


def test_a_psp_refusal_is_audited_and_answered_as_the_psp_rejecting_the_card(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None
        provisioning = world.vault.provisioning
        world.stripe.fails_with = PspRejected("card_declined", "no", "do_not_honor", "hard")
        with pytest.raises(FailedPrecondition) as declined:
            await provisioning.psp_token(MERCHANT, stored.id, "stripe", "service:gw", "t")
        assert declined.value.reason == "psp_rejected_card"
        assert declined.value.metadata == {
            "psp": "stripe",
            "psp_code": "card_declined",
            "decline_code": "do_not_honor",
            "decline_type": "hard",
        }
        world.stripe.fails_with = PspRejected("invalid_number", "no")
        with pytest.raises(FailedPrecondition) as rejected:
            await provisioning.psp_token(MERCHANT, stored.id, "stripe", "service:gw", "t")
        assert rejected.value.metadata == {"psp": "stripe", "psp_code": "invalid_number"}
        world.stripe.fails_with = PspUnavailable("timeout")
        with pytest.raises(Unavailable) as down:
            await provisioning.psp_token(MERCHANT, stored.id, "stripe", "service:gw", "t")
        assert down.value.reason == "psp_unavailable"
        failed = [a.details["error"] for a in world.store.audits if a.result == "failed"]
        assert failed == ["card_declined", "invalid_number", "timeout"]
        assert await world.store.psps_holding(stored.id) == set()

    asyncio.run(main())


def test_a_card_detached_while_the_psp_created_it_is_answered_detached(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None

        async def detach_meanwhile():
            world.stripe.meanwhile = None
            await world.vault.detach(MERCHANT, stored.id, "merchant:acct_twin")

        world.stripe.meanwhile = detach_meanwhile
        with pytest.raises(NotFound) as gone:
            await world.vault.provisioning.psp_token(MERCHANT, stored.id, "stripe", "s", "t")
        assert gone.value.reason == "payment_method_detached"
        assert await world.store.psps_holding(stored.id) == set()
        assert ("provision", "ok") not in world.audits(stored.id)

    asyncio.run(main())


def test_a_lost_reference_is_replaced_once_without_a_cvc_as_a_card_on_file(world):
    async def main():
        stored = await world.vault.tokenize(MERCHANT, _card(), {})
        assert stored is not None
        provisioning = world.vault.provisioning
        lost, _ = await provisioning.psp_token(MERCHANT, stored.id, "stripe", "service:gw", "t")
        world.cvcs.put(stored.id, "123")  # even with a CVC at hand, none goes along
        made = await provisioning.reprovision(MERCHANT, stored.id, "stripe", lost, "s", "t")
        assert made == ("stripe_ref_2", True)
        again = world.stripe.created[-1]
        assert (again.cvc, again.card_on_file, again.number) == (None, True, cards.VISA)
        assert again.idempotency_key == f"vault-{stored.id}-stripe-replacing-{lost}"
        # Another request already made it again: its reference is the answer, no creation.
        late = await provisioning.reprovision(MERCHANT, stored.id, "stripe", lost, "s", "t")
        assert late == ("stripe_ref_2", False)
        assert len(world.stripe.created) == 2
        cached = await world.store.psp_reference(stored.id, MERCHANT, "stripe")
        assert cached is not None and cached.psp_reference == "stripe_ref_2"
        reprovision = world.store.audits[-1]
        assert (reprovision.action, reprovision.details["replaced"]) == ("reprovision", lost)

    asyncio.run(main())
