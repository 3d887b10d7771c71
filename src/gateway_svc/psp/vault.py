"""gateway_svc's view of the vault: a card's token at a given PSP, asked for on the merchant's
behalf with the gateway's service identity. The vault's errors are read by reason: a missing
card is the merchant's bad input; a detached or refused card is a decline; a PSP the vault
could not reach is that PSP's `NotProcessed`; the vault itself down is `VaultUnavailable`."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from gateway_svc.domain.outcomes import NotProcessed, PspDeclined
from paymesh.platform.callers import Merchant
from paymesh.platform.channels import on_behalf_of
from paymesh.platform.errors import reason_of
from paymesh.platform.problems import InvalidArgument, Unavailable
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc


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
        try:
            reply = await self._stub.GetPspToken(
                vault_pb2.GetPspTokenRequest(payment_method=payment_method, psp=psp, reason=reason),
                metadata=on_behalf_of(merchant),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as error:
            outcome = _read(error, psp)
            if isinstance(outcome, (NotProcessed, PspDeclined)) and _asked_the_psp(error):
                self._on_psp_answer(psp, outcome)
            raise outcome from None
        if not reply.cached:
            self._on_psp_answer(psp, None)
        return reply.psp_reference


def _asked_the_psp(error: grpc.aio.AioRpcError) -> bool:
    return reason_of(error) in ("psp_unavailable", "psp_rejected_card")


def _read(error: grpc.aio.AioRpcError, psp: str) -> Exception:
    code, reason = error.code(), reason_of(error)
    if code == grpc.StatusCode.NOT_FOUND and reason == "payment_method_detached":
        return PspDeclined(
            "payment_method_detached", "This payment method was detached; its card is gone.", "hard"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return InvalidArgument.for_field(
            "payment_method", "resource_missing", "no such payment_method"
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION and reason == "psp_rejected_card":
        return PspDeclined("generic_decline", "Your card was declined.", "hard")
    if code == grpc.StatusCode.UNAVAILABLE and reason == "psp_unavailable":
        # The PSP failed the vault's request to create the card: the PSP's own failure (the
        # vault counts it in psp_call_errors_total{operation="card"}), and no payment was
        # attempted there.
        return NotProcessed(f"{psp}: card not provisioned")
    return VaultUnavailable(f"{code.name} {reason}".strip())
