"""Operators manage merchants with grpcurl and an `ops` service token: create, list, roll and
revoke keys, set PSP routing. Nothing of it is reachable through Envoy or with a merchant key."""

from __future__ import annotations

import pytest

from tests.support.http import call
from tests.support.mesh import TestMerchant
from tests.support.ops import ADMIN, admin, ok
from tests.support.payments import pay

pytestmark = pytest.mark.integration


def status_with(mesh, api_key: str) -> int:
    headers = {"authorization": f"Bearer {api_key}"}
    return call(mesh.url("/v1/payment_intents?limit=1"), headers=headers).status


def test_an_operator_creates_a_merchant_whose_key_takes_payments(mesh):
    created = ok(admin(mesh, "CreateMerchant", {"name": "initech"}))

    merchant_id = created["merchant"]["id"]
    assert created["secret_key"].startswith("sk_test_")
    assert created["live_secret_key"].startswith("sk_live_")
    assert {k["last4"] for k in created["merchant"]["api_keys"]} == {
        created["secret_key"][-4:],
        created["live_secret_key"][-4:],
    }
    listed = ok(admin(mesh, "ListMerchants", {"limit": 100}))
    assert merchant_id in {m["id"] for m in listed["merchants"]}
    key = created["secret_key"]
    response = call(
        mesh.url("/v1/payment_intents?limit=1"), headers={"authorization": f"Bearer {key}"}
    )
    assert response.status == 200


def test_rolling_a_key_revokes_the_old_one_at_once_here(mesh):
    created = ok(admin(mesh, "CreateMerchant", {"name": "hooli"}))
    old = created["secret_key"]

    rolled = ok(admin(mesh, "RollApiKey", {"merchant_id": created["merchant"]["id"]}))

    def status(key):
        return call(
            mesh.url("/v1/payment_intents?limit=1"), headers={"authorization": f"Bearer {key}"}
        ).status

    assert status_with(mesh, old) == 401
    assert status_with(mesh, rolled["secret_key"]) == 200
    revoked = ok(
        admin(
            mesh,
            "RevokeApiKey",
            {"merchant_id": created["merchant"]["id"], "api_key_id": rolled["api_key"]["id"]},
        )
    )
    assert revoked["api_key"]["revoked"]
    assert status_with(mesh, rolled["secret_key"]) == 401


def test_psp_routing_decides_where_payments_go(mesh, infra):
    created = ok(admin(mesh, "CreateMerchant", {"name": "umbrella"}))
    merchant_id = created["merchant"]["id"]

    routed = ok(
        admin(mesh, "SetPspRouting", {"merchant_id": merchant_id, "psp_routing": ["stripe"]})
    )
    bad = admin(mesh, "SetPspRouting", {"merchant_id": merchant_id, "psp_routing": ["paypal"]})

    assert routed["merchant"]["psp_routing"] == ["stripe"]
    assert bad.returncode != 0 and "InvalidArgument" in bad.stderr

    payer = TestMerchant(merchant_id, created["secret_key"], created["live_secret_key"])
    assert pay(mesh, payer).body["psp"] == "stripe"


@pytest.mark.parametrize("api_key", ["", "sk_test_not_an_operator"])
def test_admin_calls_need_the_ops_identity(mesh, api_key):
    result = admin(mesh, "ListMerchants", {}, as_operator=False, api_key=api_key)

    assert result.returncode != 0
    assert "PermissionDenied" in result.stderr


def test_no_envoy_route_reaches_the_admin_service(mesh, merchant):
    response = call(mesh.url(f"/{ADMIN}/ListMerchants"), "POST", merchant.auth(), {})
    assert response.status == 404
