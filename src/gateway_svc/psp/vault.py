"""gateway_svc's view of the vault: a card's reference at a given PSP, asked for on the
merchant's behalf with the gateway's service identity, and the card provisioned there again
when that PSP no longer knows the reference.

The vault's errors are read into the outcome taxonomy (`vault_outcome`, pure): a missing card
is the merchant's bad input; a detached card is a hard decline (its card data is gone); a card
the PSP would not create is a decline only when that PSP said `card_declined` (with its
decline code), and otherwise `CardNotProvisioned`: no issuer saw it (localstripe refuses a
card without a CVC, which the vault keeps for minutes only); a PSP the vault could not reach
is that PSP's `NotProcessed`; the vault itself down is `VaultUnavailable`."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from gateway_svc.domain.outcomes import CardNotProvisioned, NotProcessed, PspDeclined
from paymesh.platform.callers import Merchant
from paymesh.platform.channels import on_behalf_of
from paymesh.platform.errors import error_info_of
from paymesh.platform.problems import InvalidArgument, Unavailable
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc

# The vault's reasons for an answer it had from the PSP (the PSP was asked).
_PSP_ANSWERED = ("psp_unavailable", "psp_rejected_card")


class VaultUnavailable(Unavailable):
    def __init__(self, why: str):
        super().__init__("the card vault is unavailable; retry later", reason="vault_unavailable")
        self.why = why


class VaultClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout: float = 5.0,
        on_psp_answer: Callable[[str, BaseException | None], None] | None = None,
    ):
        """`on_psp_answer(psp, error)`: told each time the vault asked the PSP to create the
        card (not when it answered from its cache), with the failure or refusal if any."""
        self._stub = vault_pb2_grpc.VaultInternalServiceStub(channel)
        self.timeout = timeout
        self._on_psp_answer = on_psp_answer or (lambda psp, error: None)

    async def psp_token(
        self, merchant: Merchant, payment_method: str, psp: str, reason: str
    ) -> str:
        request = vault_pb2.GetPspTokenRequest(
            payment_method=payment_method, psp=psp, reason=reason
        )
        reply = await self._ask(self._stub.GetPspToken, request, merchant, psp)
        if not reply.cached:
            self._on_psp_answer(psp, None)
        return reply.psp_reference

    async def reprovision(
        self, merchant: Merchant, payment_method: str, psp: str, unknown_reference: str, reason: str
    ) -> str:
        """The card's new reference at `psp`, which no longer knows `unknown_reference`: the
        vault creates the card there again, without a CVC, as a merchant-initiated
        card-on-file (or answers the reference another request made meanwhile)."""
        request = vault_pb2.ReprovisionPspTokenRequest(
            payment_method=payment_method,
            psp=psp,
            unknown_reference=unknown_reference,
            reason=reason,
        )
        reply = await self._ask(self._stub.ReprovisionPspToken, request, merchant, psp)
        if reply.reprovisioned:
            self._on_psp_answer(psp, None)
        return reply.psp_reference

    async def card_summaries(self, payment_methods: list[str]) -> list[vault_pb2.CardSummary]:
        """The masked cards of up to 100 payment methods of any merchant (the back office's
        screens): the vault reads their clear columns and decrypts nothing. Unknown ones are
        left out. Errors are the caller's to handle (grpc.aio.AioRpcError)."""
        request = vault_pb2.GetCardSummariesRequest(payment_methods=payment_methods)
        reply = await self._stub.GetCardSummaries(request, timeout=self.timeout)
        return list(reply.cards)

    async def _ask(self, rpc, request, merchant: Merchant, psp: str):
        try:
            return await rpc(request, metadata=on_behalf_of(merchant), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            reason, metadata = error_info_of(error)
            outcome = vault_outcome(error.code(), reason, metadata, psp)
            if reason in _PSP_ANSWERED:
                self._on_psp_answer(psp, outcome)
            raise outcome from None


def vault_outcome(
    code: grpc.StatusCode, reason: str, metadata: dict[str, str], psp: str
) -> Exception:
    """What the vault's error says, in the outcome taxonomy."""
    if code == grpc.StatusCode.NOT_FOUND and reason == "payment_method_detached":
        return PspDeclined(
            "payment_method_detached", "This payment method was detached; its card is gone.", "hard"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return InvalidArgument.for_field(
            "payment_method", "resource_missing", "no such payment_method"
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION and reason == "psp_rejected_card":
        if metadata.get("psp_code") == "card_declined":
            kind = metadata.get("decline_type")
            return PspDeclined(
                metadata.get("decline_code") or "generic_decline",
                "Your card was declined.",
                kind if kind in ("hard", "soft") else "hard",
                psp=psp,
            )
        return CardNotProvisioned(psp, metadata.get("psp_code") or "card_rejected")
    if code == grpc.StatusCode.UNAVAILABLE and reason == "psp_unavailable":
        # The PSP failed the vault's request to create the card: the PSP's own failure (the
        # vault counts it in psp_call_errors_total{operation="card"}), and no payment was
        # attempted there.
        return NotProcessed(f"{psp}: card not provisioned")
    return VaultUnavailable(f"{code.name} {reason}".strip())
