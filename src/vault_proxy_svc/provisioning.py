"""A card at the PSPs: the vault creates it at each PSP (inside its boundary, the only place
the number is readable), caches each PSP's reference, and creates it again where a PSP lost it.

- Ahead of failover: a card tokenized with a CVC is created at every configured PSP in the
  background right after the tokenization answered, with that CVC, so that a failover finds
  it at the next PSP (localstripe, like a PSP that insists, refuses a card without a CVC).
  The CVC stays in this process's memory only until every configured PSP holds the card, or
  its TTL passes (`CvcStore`).
- On demand (GetPspToken): a PSP without the card gets it now, with the CVC if it is still
  held. Either way one creation per card and PSP at a time in this process (a lock), and
  under an idempotency key per card and PSP at the PSP.
- Again (ReprovisionPspToken): a PSP that no longer knows the reference it was given gets the
  card once more, without a CVC, as a merchant-initiated card-on-file, under an idempotency
  key naming the lost reference; when the cached reference already differs from the lost one,
  another request made the card again, and that reference is the answer.

Every creation is audited (`provision` / `reprovision`, ok or failed, with the PSP and whether a
CVC went along), every decryption before it happens. A PSP's refusal of the card is an issuer's
decline only when it says `card_declined`: the gateway reads the rest as a PSP that would not
hold the card (`psp_rejected_card` with its `psp_code`)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from typing import Any

import structlog

from paymesh.platform.callers import Merchant
from paymesh.platform.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from vault_proxy_svc.card_store import CardStore
from vault_proxy_svc.cards import Card
from vault_proxy_svc.cvc_store import CvcStore
from vault_proxy_svc.envelope import binding, unseal
from vault_proxy_svc.keys import KeyProvider
from vault_proxy_svc.metrics import (
    DECRYPT_SECONDS,
    PSP_CALL_ERRORS,
    PSP_CALLS,
    PSP_PROVISIONING,
    PSP_TOKEN_LOOKUPS,
)
from vault_proxy_svc.models import AuditEntry, PaymentMethod, detached, require_attached
from vault_proxy_svc.psp import CardProvisioner, PspRejected, PspUnavailable

log = structlog.get_logger(__name__)

AHEAD_ACTOR = "worker:provision"
# Cards being created ahead at once in this process; beyond it a card waits for its first
# charge instead (its CVC is held for that as long as the TTL lets it).
MAX_AHEAD = 64


class CardProvisioning:
    def __init__(
        self,
        keys: KeyProvider,
        cards: CardStore,
        psps: dict[str, CardProvisioner],
        cvcs: CvcStore,
    ):
        self._keys = keys
        self._cards = cards
        self._psps = psps
        self._cvcs = cvcs
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._ahead: set[asyncio.Task] = set()

    # --- ahead of failover ----------------------------------------------------------------

    def hold_cvc_and_provision_ahead(self, merchant: Merchant, token: str, card: Card) -> None:
        """After a tokenization: the CVC waits in memory, and the card goes to every PSP in
        the background while it does."""
        if not card.cvc:
            return
        self._cvcs.put(token, card.cvc)
        if len(self._ahead) >= MAX_AHEAD:
            log.info("provision_ahead_skipped", correlation_id=token, in_flight=len(self._ahead))
            return
        task = asyncio.create_task(self._provision_ahead(merchant, token, card))
        self._ahead.add(task)
        task.add_done_callback(self._ahead.discard)

    async def _provision_ahead(self, merchant: Merchant, token: str, card: Card) -> None:
        reason = "tokenize: ahead of failover"
        answers = await asyncio.gather(
            *(
                self._reference(merchant, token, psp, AHEAD_ACTOR, reason, card=card)
                for psp in self._psps
            ),
            return_exceptions=True,
        )
        for psp, answer in zip(self._psps, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(
                answer, (FailedPrecondition, Unavailable, NotFound)
            ):
                log.error("provision_ahead_failed", psp=psp, error=type(answer).__name__)

    def forget_cvc(self, token: str) -> None:
        self._cvcs.drop(token)

    # --- on demand and again --------------------------------------------------------------

    async def psp_token(
        self, merchant: Merchant, token: str, psp: str, actor: str, reason: str
    ) -> tuple[str, bool]:
        """The PSP's reference for the card, and whether it came from the cache."""
        self._provisioner(psp)
        # The hot path: two small columns, not the card's whole row.
        cached = require_attached(await self._cards.psp_reference(token, merchant, psp))
        if cached.psp_reference:
            PSP_TOKEN_LOOKUPS.labels(psp, "hit").inc()
            return cached.psp_reference, True
        return await self._reference(merchant, token, psp, actor, reason)

    async def reprovision(
        self,
        merchant: Merchant,
        token: str,
        psp: str,
        unknown_reference: str,
        actor: str,
        reason: str,
    ) -> tuple[str, bool]:
        """The card's reference at a PSP that lost `unknown_reference`, and whether this call
        made it (False: another one had already)."""
        cards = self._provisioner(psp)
        async with self._lock(token, psp):
            found = await self._cards.get_with_psp_reference(token, merchant, psp)
            at_psp = require_attached(found)
            if at_psp.psp_reference and at_psp.psp_reference != unknown_reference:
                return at_psp.psp_reference, False
            reference = await self._create(
                cards, at_psp.card, merchant, actor, reason, replacing=unknown_reference
            )
            return reference, True

    async def _reference(
        self,
        merchant: Merchant,
        token: str,
        psp: str,
        actor: str,
        reason: str,
        card: Card | None = None,
    ) -> tuple[str, bool]:
        """The cached reference, or the card created at `psp` now (with `card` in hand, no
        decryption), one creation per card and PSP at a time."""
        cards = self._provisioner(psp)
        async with self._lock(token, psp):
            found = await self._cards.get_with_psp_reference(token, merchant, psp)
            at_psp = require_attached(found)
            if at_psp.psp_reference:
                PSP_TOKEN_LOOKUPS.labels(psp, "hit").inc()
                return at_psp.psp_reference, True
            PSP_TOKEN_LOOKUPS.labels(psp, "miss").inc()
            created = await self._create(cards, at_psp.card, merchant, actor, reason, card=card)
            return created, False

    def _provisioner(self, psp: str) -> CardProvisioner:
        cards = self._psps.get(psp)
        if cards is None:
            raise InvalidArgument.for_field(
                "psp", "unsupported_psp", f"supported: {', '.join(sorted(self._psps))}"
            )
        return cards

    def _lock(self, token: str, psp: str) -> asyncio.Lock:
        return self._locks.setdefault((token, psp), asyncio.Lock())

    async def _create(
        self,
        cards: CardProvisioner,
        stored: PaymentMethod,
        merchant: Merchant,
        actor: str,
        reason: str,
        card: Card | None = None,
        replacing: str | None = None,
    ) -> str:
        """Creates the card at the PSP and caches its reference (in place of `replacing`, the
        one the PSP lost: then without a CVC, as a merchant-initiated card-on-file)."""
        psp, token = cards.psp, stored.id
        audit = AuditEntry(
            actor=actor,
            action="reprovision" if replacing else "provision",
            result="ok",
            payment_method=token,
            merchant_id=merchant.id,
            reason=reason,
        )
        if card is None:
            card = await self._decrypt(stored, merchant, audit, f"{audit.action}:{psp}")
        cvc = None if replacing else self._cvcs.peek(token)
        facts: dict[str, Any] = {"psp": psp, "with_cvc": bool(cvc)}
        if replacing:
            facts.update(replaced=replacing, card_on_file="merchant_initiated")
        key = f"vault-{token}-{psp}" + (f"-replacing-{replacing}" if replacing else "")
        PSP_CALLS.labels(psp, "card").inc()
        try:
            reference = await cards.create(
                card, cvc, idempotency_key=key, card_on_file=bool(replacing)
            )
        except (PspUnavailable, PspRejected) as error:
            code = error.code if isinstance(error, PspRejected) else str(error)
            if isinstance(error, PspUnavailable):  # a refused card is an answer, not a failure
                PSP_CALL_ERRORS.labels(psp, "card", code).inc()
            PSP_PROVISIONING.labels(psp, "error").inc()
            failed = dataclasses.replace(audit, result="failed", details={**facts, "error": code})
            await self._cards.add_audit(failed)
            if isinstance(error, PspRejected):
                raise _rejected(psp, error) from None
            raise Unavailable(f"{psp} is unavailable", reason="psp_unavailable") from None
        saved = await self._cards.save_psp_reference(
            token, psp, reference, dataclasses.replace(audit, details=facts), replacing=replacing
        )
        if saved is None:  # detached while the PSP was creating it
            raise detached()
        PSP_PROVISIONING.labels(psp, "ok").inc()
        if cvc:
            await self._forget_cvc_once_everywhere(token)
        return saved

    async def _decrypt(
        self, stored: PaymentMethod, merchant: Merchant, audit: AuditEntry, purpose: str
    ) -> Card:
        # The decryption is on record before it happens, whatever follows.
        await self._cards.add_audit(
            dataclasses.replace(audit, action="decrypt", details={"purpose": purpose})
        )
        assert stored.sealed is not None  # an attached card's number is sealed
        started = time.perf_counter()
        pan = await unseal(
            stored.sealed, binding(stored.id, merchant.id, merchant.livemode), self._keys
        )
        DECRYPT_SECONDS.observe(time.perf_counter() - started)
        return Card(pan, stored.exp_month, stored.exp_year, "", stored.brand)

    async def _forget_cvc_once_everywhere(self, token: str) -> None:
        """Drops the CVC once every configured PSP holds the card: nobody needs it any more."""
        holding = await self._cards.psps_holding(token)
        if set(self._psps) <= holding:
            self._cvcs.drop(token)


def _rejected(psp: str, error: PspRejected) -> FailedPrecondition:
    metadata = {"psp": psp, "psp_code": error.code}
    if error.code == "card_declined":
        metadata.update(decline_code=error.decline_code, decline_type=error.decline_type)
    return FailedPrecondition(
        f"{psp} rejected the card ({error.code})", reason="psp_rejected_card", metadata=metadata
    )
