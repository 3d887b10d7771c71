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
import time
import weakref
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.platform.callers import Merchant
from paymesh.platform.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from vault_proxy_svc import repository
from vault_proxy_svc.cards import Card
from vault_proxy_svc.cvc_store import CvcStore
from vault_proxy_svc.envelope import Sealed, binding, unseal
from vault_proxy_svc.keys import KeyProvider
from vault_proxy_svc.metrics import (
    DECRYPT_SECONDS,
    PSP_CALL_ERRORS,
    PSP_CALLS,
    PSP_PROVISIONING,
    PSP_TOKEN_LOOKUPS,
)
from vault_proxy_svc.psp import CardProvisioner, PspRejected, PspUnavailable

log = structlog.get_logger(__name__)

AHEAD_ACTOR = "worker:provision"
# Cards being created ahead at once in this process; beyond it a card waits for its first
# charge instead (its CVC is held for that as long as the TTL lets it).
MAX_AHEAD = 64


class CardProvisioning:
    def __init__(
        self,
        engine: AsyncEngine,
        keys: KeyProvider,
        payment_methods: repository.PaymentMethodRepository,
        psps: dict[str, CardProvisioner],
        cvcs: CvcStore,
    ):
        self._engine = engine
        self._keys = keys
        self._payment_methods = payment_methods
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
        cached = await self._payment_methods.psp_reference(token, merchant, psp)
        _require_attached(cached)
        if cached["psp_reference"]:
            PSP_TOKEN_LOOKUPS.labels(psp, "hit").inc()
            return cached["psp_reference"], True
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
            row = await self._payment_methods.get_with_psp_reference(token, merchant, psp)
            _require_attached(row)
            if row["psp_reference"] and row["psp_reference"] != unknown_reference:
                return row["psp_reference"], False
            reference = await self._create(
                cards, row, merchant, actor, reason, replacing=unknown_reference
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
            row = await self._payment_methods.get_with_psp_reference(token, merchant, psp)
            _require_attached(row)
            if row["psp_reference"]:
                PSP_TOKEN_LOOKUPS.labels(psp, "hit").inc()
                return row["psp_reference"], True
            PSP_TOKEN_LOOKUPS.labels(psp, "miss").inc()
            return await self._create(cards, row, merchant, actor, reason, card=card), False

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
        row: dict[str, Any],
        merchant: Merchant,
        actor: str,
        reason: str,
        card: Card | None = None,
        replacing: str | None = None,
    ) -> str:
        """Creates the card at the PSP and caches its reference (in place of `replacing`, the
        one the PSP lost: then without a CVC, as a merchant-initiated card-on-file)."""
        psp, token = cards.psp, row["id"]
        audit = {"actor": actor, "payment_method": token, "merchant_id": merchant.id}
        action = "reprovision" if replacing else "provision"
        if card is None:
            card = await self._decrypt(row, merchant, audit, reason, purpose=f"{action}:{psp}")
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
            async with self._engine.begin() as connection:
                await repository.add_audit(
                    connection,
                    action=action,
                    result="failed",
                    reason=reason,
                    details={**facts, "error": code},
                    **audit,
                )
            if isinstance(error, PspRejected):
                raise _rejected(psp, error) from None
            raise Unavailable(f"{psp} is unavailable", reason="psp_unavailable") from None
        async with self._engine.begin() as connection:
            saved = await repository.save_psp_reference(
                connection, token, psp, reference, replacing=replacing
            )
            if saved is None:  # detached while the PSP was creating it
                raise _detached()
            await repository.add_audit(
                connection,
                action=action,
                result="ok",
                reason=reason,
                details={**facts, "psp_reference": saved},
                **audit,
            )
        PSP_PROVISIONING.labels(psp, "ok").inc()
        if cvc:
            await self._forget_cvc_once_everywhere(token)
        return saved

    async def _decrypt(
        self, row: dict[str, Any], merchant: Merchant, audit: dict, reason: str, purpose: str
    ) -> Card:
        # The decryption is on record before it happens, whatever follows.
        async with self._engine.begin() as connection:
            await repository.add_audit(
                connection,
                action="decrypt",
                result="ok",
                reason=reason,
                details={"purpose": purpose},
                **audit,
            )
        started = time.perf_counter()
        pan = await unseal(
            Sealed(row["kek_version"], row["wrapped_key"], row["nonce"], row["ciphertext"]),
            binding(row["id"], merchant.id, merchant.livemode),
            self._keys,
        )
        DECRYPT_SECONDS.observe(time.perf_counter() - started)
        return Card(pan, row["exp_month"], row["exp_year"], "", row["brand"])

    async def _forget_cvc_once_everywhere(self, token: str) -> None:
        """Drops the CVC once every configured PSP holds the card: nobody needs it any more."""
        holding = await self._payment_methods.psps_holding(token)
        if set(self._psps) <= holding:
            self._cvcs.drop(token)


def _rejected(psp: str, error: PspRejected) -> FailedPrecondition:
    metadata = {"psp": psp, "psp_code": error.code}
    if error.code == "card_declined":
        metadata.update(decline_code=error.decline_code, decline_type=error.decline_type)
    return FailedPrecondition(
        f"{psp} rejected the card ({error.code})", reason="psp_rejected_card", metadata=metadata
    )


def _detached() -> NotFound:
    return NotFound(
        "the payment_method was detached; its card data is destroyed",
        reason="payment_method_detached",
    )


def _require_attached(row: dict[str, Any] | None) -> None:
    # The messages do not repeat the id: the caller knows it, and logs need not.
    if row is None:
        raise NotFound("no such payment_method", reason="resource_missing")
    if row["detached_at"] is not None:
        raise _detached()
