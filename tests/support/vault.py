"""Cards as the tests tokenize them, and the vault's internal RPC as the gateway calls it."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import grpc

from paymesh.platform.callers import LIVEMODE_HEADER, MERCHANT_HEADER
from paymesh.platform.service_auth import SERVICE_TOKEN_HEADER, TokenIssuer
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from tests.support import cards
from tests.support.http import call

NEXT_YEAR = datetime.now(UTC).year + 1


def tokenize(mesh, merchant, number=cards.VISA, **fields):
    card = {"number": number, "exp_month": 12, "exp_year": NEXT_YEAR, "cvc": "123"}
    card.update(fields.pop("card", {}))
    return call(
        mesh.url("/v1/payment_methods"),
        method="POST",
        headers=merchant.auth(),
        body={"card": card, **fields},
    )


def keys_dir() -> Path:
    return Path(os.environ["PAYMESH_KEYS_DIR"])


def psp_token(mesh, merchant, token: str, metadata=None, psp: str = "stripe"):
    """GetPspToken as gateway_svc calls it, unless `metadata` says otherwise."""
    if metadata is None:
        metadata = (
            (SERVICE_TOKEN_HEADER, TokenIssuer("gateway", keys_dir()).token_for("vault")),
            (MERCHANT_HEADER, merchant.id),
            (LIVEMODE_HEADER, "false"),
        )
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['vault']}") as channel:
        return vault_pb2_grpc.VaultInternalServiceStub(channel).GetPspToken(
            vault_pb2.GetPspTokenRequest(payment_method=token, psp=psp, reason="test"),
            metadata=metadata,
            timeout=15,
        )


def card_summaries(mesh, tokens: list[str], metadata=None):
    """GetCardSummaries as gateway_svc calls it (no merchant vouched for), unless `metadata`
    says otherwise."""
    if metadata is None:
        metadata = ((SERVICE_TOKEN_HEADER, TokenIssuer("gateway", keys_dir()).token_for("vault")),)
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['vault']}") as channel:
        return vault_pb2_grpc.VaultInternalServiceStub(channel).GetCardSummaries(
            vault_pb2.GetCardSummariesRequest(payment_methods=tokens),
            metadata=metadata,
            timeout=15,
        )


def grpc_token(mesh, merchant) -> str:
    """A Visa tokenized over gRPC, straight to the vault."""
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['vault']}") as channel:
        return (
            vault_pb2_grpc.VaultServiceStub(channel)
            .CreatePaymentMethod(
                vault_pb2.CreatePaymentMethodRequest(
                    card=vault_pb2.CardInput(
                        number="4242424242424242", exp_month=12, exp_year=NEXT_YEAR, cvc="123"
                    )
                ),
                metadata=tuple(merchant.auth().items()),
                timeout=10,
            )
            .id
        )
