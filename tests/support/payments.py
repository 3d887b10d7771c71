"""Payments as a merchant makes them: REST through Envoy, or gRPC straight to the gateway."""

from __future__ import annotations

import grpc
import psycopg

from paymesh.gateway.v1 import gateway_pb2_grpc
from tests.support import cards
from tests.support.http import call
from tests.support.vault import tokenize
from tests.support.waiting import wait_until


def post(mesh, merchant, path, body=None, key=None, live=False):
    headers = merchant.auth(live=live)
    if key:
        headers["idempotency-key"] = key
    return call(mesh.url(path), "POST", headers, body or {})


def pay(mesh, merchant, number=cards.VISA, **fields):
    token = tokenize(mesh, merchant, number).body["id"]
    body = {"amount": 1000, "currency": "usd", "payment_method": token, "confirm": True, **fields}
    return post(mesh, merchant, "/v1/payment_intents", body)


def refund_when(mesh, merchant, refund_id: str, status: str, timeout: float) -> dict:
    """The refund once it has `status` (the recovery sweep may take a while)."""
    return wait_until(
        lambda: (
            (r := call(mesh.url(f"/v1/refunds/{refund_id}"), headers=merchant.auth()).body)
            and r["status"] == status
            and r
        ),
        timeout=timeout,
    )


def route(infra, merchant, *psps: str) -> None:
    with psycopg.connect(infra.database_url, autocommit=True) as db:
        db.execute(
            "UPDATE gateway.merchants SET psp_routing = %s WHERE id = %s", (list(psps), merchant.id)
        )


def grpc_create(mesh, merchant, request, key=None, timeout=30):
    """CreatePaymentIntent straight to the gateway: (intent, initial metadata as a dict)."""
    metadata = tuple(merchant.auth().items()) + ((("idempotency-key", key),) if key else ())
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}") as channel:
        reply, rpc = gateway_pb2_grpc.GatewayServiceStub(channel).CreatePaymentIntent.with_call(
            request, metadata=metadata, timeout=timeout
        )
        return reply, dict(rpc.initial_metadata())
