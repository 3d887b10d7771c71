"""Calls straight to a mesh's gRPC ports, past Envoy (a mesh that runs none, a crash test)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from paymesh.gateway.v1 import gateway_pb2_grpc
from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc


def gateway_call(mesh, merchant, method: str, request, timeout: float = 30):
    """One GatewayService call as the merchant; its answer, or the grpc.RpcError."""
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}") as channel:
        call = getattr(gateway_pb2_grpc.GatewayServiceStub(channel), method)
        return call(request, metadata=tuple(merchant.auth().items()), timeout=timeout)


def vault_token(mesh, merchant, number: str = "4242424242424242") -> str:
    """A payment method of the merchant's, made by the vault."""
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['vault']}") as channel:
        card = vault_pb2.CardInput(
            number=number, exp_month=12, exp_year=datetime.now(UTC).year + 1, cvc="123"
        )
        return (
            vault_pb2_grpc.VaultServiceStub(channel)
            .CreatePaymentMethod(
                vault_pb2.CreatePaymentMethodRequest(card=card),
                metadata=tuple(merchant.auth().items()),
                timeout=10,
            )
            .id
        )
