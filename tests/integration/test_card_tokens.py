"""The gateway keeps cards' PSP references in memory so a charge needs no vault call; a card
the merchant detached must still never be charged again, from memory or otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from dev.devmesh import Ports
from paymesh.gateway.v1 import card_access_pb2, card_access_pb2_grpc
from paymesh.platform.callers import LIVEMODE_HEADER, MERCHANT_HEADER
from paymesh.platform.service_auth import SERVICE_TOKEN_HEADER, TokenIssuer
from tests.support.envelope import reason_of
from tests.support.http import call
from tests.support.mesh import base_env, started_mesh
from tests.support.payments import post
from tests.support.psp import sandbox
from tests.support.tcp_proxy import TcpProxy
from tests.support.vault import tokenize
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def charge(mesh, merchant, token: str):
    body = {"amount": 700, "currency": "usd", "payment_method": token, "confirm": True}
    return post(mesh, merchant, "/v1/payment_intents", body)


def test_a_detached_card_is_never_charged_again_though_its_reference_was_remembered(mesh, merchant):
    token = tokenize(mesh, merchant).body["id"]
    for _ in range(3):  # remembered by the gateway from the first charge on
        assert charge(mesh, merchant, token).body["status"] == "succeeded"
    detached = call(mesh.url(f"/v1/payment_methods/{token}/detach"), "POST", merchant.auth(), {})
    assert detached.status == 200
    charges_before = sandbox(mesh, "/_stats")["charges_created"]

    refused = [charge(mesh, merchant, token) for _ in range(3)]

    for response in refused:
        assert response.status == 200, response.body
        assert response.body["status"] == "requires_payment_method"
        assert response.body["last_payment_error"]["decline_code"] == "payment_method_detached"
    assert sandbox(mesh, "/_stats")["charges_created"] == charges_before


def revoke(mesh, merchant, metadata: tuple) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['gateway']}") as channel:
        card_access_pb2_grpc.CardAccessServiceStub(channel).RevokePaymentMethod(
            card_access_pb2.RevokePaymentMethodRequest(payment_method="pm_anything"),
            metadata=metadata,
            timeout=5,
        )


def test_only_the_vault_may_revoke_a_card(mesh, merchant):
    rebill = TokenIssuer("rebill", Path(os.environ["PAYMESH_KEYS_DIR"])).token_for("gateway")
    on_behalf = ((MERCHANT_HEADER, merchant.id), (LIVEMODE_HEADER, "false"))

    for metadata in (
        tuple(merchant.auth().items()),
        ((SERVICE_TOKEN_HEADER, rebill), *on_behalf),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            revoke(mesh, merchant, metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_charge_after_detach_is_declined_when_the_gateway_never_saw_the_card(mesh, merchant):
    token = tokenize(mesh, merchant).body["id"]
    call(mesh.url(f"/v1/payment_methods/{token}/detach"), "POST", merchant.auth(), {})

    response = charge(mesh, merchant, token)

    assert response.body["last_payment_error"]["decline_code"] == "payment_method_detached"
    assert reason_of(call(mesh.url(f"/v1/payment_methods/{token}"), headers=merchant.auth())) == (
        "payment_method_detached"
    )


@pytest.fixture(scope="module")
def gateway_link():
    """The vault's (and the other services') way to the gateway, which the test can cut."""
    ports = Ports.free()
    proxy = TcpProxy("127.0.0.1", ports.grpc["gateway"]).start()
    yield ports, proxy
    proxy.stop()


@pytest.fixture(scope="module")
def linked_mesh(infra, gateway_link, tmp_path_factory):
    ports, proxy = gateway_link
    env = base_env(infra, **{**ports.service_env(), "GATEWAY_ADDR": f"127.0.0.1:{proxy.port}"})
    with started_mesh(env, ports, tmp_path_factory.mktemp("linked-mesh"), timeout=60) as mesh:
        yield mesh


def test_a_detach_the_gateway_cannot_hear_of_is_refused_and_changes_nothing(
    linked_mesh, gateway_link, merchant
):
    _, proxy = gateway_link
    token = tokenize(linked_mesh, merchant).body["id"]  # the vault remembers the API key now
    assert charge(linked_mesh, merchant, token).body["status"] == "succeeded"
    detach = linked_mesh.url(f"/v1/payment_methods/{token}/detach")

    proxy.stop()
    try:
        refused = call(detach, "POST", merchant.auth(), {})
    finally:
        proxy.start()

    assert refused.status == 503, refused.body
    assert reason_of(refused) == "gateway_unavailable"
    still = call(linked_mesh.url(f"/v1/payment_methods/{token}"), headers=merchant.auth())
    assert still.status == 200 and still.body["card"]["last4"] == "4242"
    # The merchant retries; the vault's channel reconnects within its backoff.
    wait_until(lambda: call(detach, "POST", merchant.auth(), {}).status == 200, timeout=30)
    declined = charge(linked_mesh, merchant, token).body
    assert declined["last_payment_error"]["decline_code"] == "payment_method_detached"
