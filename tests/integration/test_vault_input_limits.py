"""Bad input to the vault is a 400 naming the field and stores nothing: non-ASCII digits in a
card number, over-long or control characters in any string of a tokenization (through Envoy,
and on the vault's own gRPC port, where no edge filter helps), ids of a bad shape."""

from __future__ import annotations

import json

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paymesh.vault.v1 import vault_pb2, vault_pb2_grpc
from tests.support import cards
from tests.support.envelope import violations
from tests.support.http import call
from tests.support.vault import NEXT_YEAR, tokenize
from vault_proxy_svc.cards import BILLING_LIMITS

pytestmark = pytest.mark.integration


def _count_cards(infra) -> int:
    with psycopg.connect(infra.database_url) as db:
        return db.execute("SELECT count(*) FROM vault.payment_methods").fetchone()[0]


def _nested(path: str, value: str) -> dict:
    head, _, rest = path.partition(".")
    return {head: _nested(rest, value) if rest else value}


@pytest.mark.parametrize(
    "number",
    ["424242424242424²", "４２４２４２４２４２４２４２４２", "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢"],
)
def test_non_ascii_digits_are_a_400_naming_the_card_number(mesh, merchant, infra, number):
    before = _count_cards(infra)

    response = tokenize(mesh, merchant, number)

    assert response.status == 400, response.body
    assert violations(response) == {"card.number": "invalid_number"}
    assert number not in json.dumps(response.body, ensure_ascii=False)
    assert _count_cards(infra) == before


@pytest.mark.parametrize(("field", "limit"), sorted(BILLING_LIMITS.items()))
def test_each_overlong_billing_string_is_a_400_and_stores_nothing(
    mesh, merchant, infra, field, limit
):
    value = "a" * (limit - 5) + "@b.com" if field == "email" else "a" * (limit + 1)
    before = _count_cards(infra)

    response = tokenize(mesh, merchant, billing_details=_nested(field, value))

    assert response.status == 400, response.body
    reason = "invalid_country" if field == "address.country" else "too_long"
    assert violations(response) == {f"billing_details.{field}": reason}
    assert _count_cards(infra) == before


def test_a_megabyte_name_is_a_400(mesh, merchant, infra):
    before = _count_cards(infra)

    response = tokenize(mesh, merchant, billing_details={"name": "n" * 1_000_000})

    assert response.status in (400, 413)
    assert _count_cards(infra) == before


def _create(mesh, merchant, request: vault_pb2.CreatePaymentMethodRequest):
    """CreatePaymentMethod on the vault's gRPC port, as an internal caller could send it."""
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['vault']}") as channel:
        return vault_pb2_grpc.VaultServiceStub(channel).CreatePaymentMethod(
            request, metadata=(("authorization", f"Bearer {merchant.secret_key}"),), timeout=10
        )


def _field_violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    found = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found |= {v.field: v.reason for v in bad.field_violations}
    return found


@pytest.mark.parametrize(
    ("billing", "field"),
    [
        (vault_pb2.BillingDetails(name="Ada\x00Lovelace"), "billing_details.name"),
        (vault_pb2.BillingDetails(name="Ada\nLovelace"), "billing_details.name"),
        (vault_pb2.BillingDetails(email="ada\t@example.com"), "billing_details.email"),
        (
            vault_pb2.BillingDetails(address=vault_pb2.Address(line1="1 Rue\x00")),
            "billing_details.address.line1",
        ),
        (
            vault_pb2.BillingDetails(address=vault_pb2.Address(city="Paris\x1b[2J")),
            "billing_details.address.city",
        ),
        (
            vault_pb2.BillingDetails(address=vault_pb2.Address(postal_code="7500\u202e1")),
            "billing_details.address.postal_code",
        ),
    ],
)
def test_a_control_character_on_the_grpc_port_is_a_400_naming_the_field(
    mesh, merchant, infra, billing, field
):
    before = _count_cards(infra)
    request = vault_pb2.CreatePaymentMethodRequest(
        card=vault_pb2.CardInput(number=cards.VISA, exp_month=12, exp_year=NEXT_YEAR),
        billing_details=billing,
    )

    with pytest.raises(grpc.RpcError) as raised:
        _create(mesh, merchant, request)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in _field_violations(raised.value)
    assert _count_cards(infra) == before


def test_a_card_number_with_a_nul_on_the_grpc_port_is_a_400(mesh, merchant):
    request = vault_pb2.CreatePaymentMethodRequest(
        card=vault_pb2.CardInput(number=cards.VISA + "\x00", exp_month=12, exp_year=NEXT_YEAR)
    )

    with pytest.raises(grpc.RpcError) as raised:
        _create(mesh, merchant, request)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "card.number" in _field_violations(raised.value)
    assert cards.VISA not in (raised.value.details() or "")


@pytest.mark.parametrize(
    ("bad_id", "reason"),
    [
        ("pm_abc\x00def", "invalid_characters"),
        ("pm_" + "a" * 60, "too_long"),
        ("pm_abcdéf", "invalid_characters"),
        ("pm_４２", "invalid_characters"),
    ],
)
@pytest.mark.parametrize("rpc", ["GetPaymentMethod", "DetachPaymentMethod"])
def test_an_id_of_bad_shape_on_the_grpc_port_is_a_400_naming_id(
    mesh, merchant, rpc, bad_id, reason
):
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.grpc['vault']}") as channel:
        stub = vault_pb2_grpc.VaultServiceStub(channel)
        request_class = getattr(vault_pb2, f"{rpc}Request")
        with pytest.raises(grpc.RpcError) as raised:
            getattr(stub, rpc)(
                request_class(id=bad_id),
                metadata=(("authorization", f"Bearer {merchant.secret_key}"),),
                timeout=10,
            )

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field_violations(raised.value) == {"id": reason}
    assert bad_id[3:] not in (raised.value.details() or "")


@pytest.mark.parametrize("path", ["pm_" + "a" * 60, "pm_abc%C3%A9", "pm_%EF%BC%94%EF%BC%92"])
def test_an_id_of_bad_shape_through_envoy_is_a_400_naming_id(mesh, merchant, path):
    for method, url in (
        ("GET", f"/v1/payment_methods/{path}"),
        ("POST", f"/v1/payment_methods/{path}/detach"),
    ):
        response = call(mesh.url(url), method, merchant.auth(), {} if method == "POST" else None)
        assert response.status == 400, (method, response.body)
        assert "id" in violations(response)


def test_a_card_number_in_an_id_is_never_echoed(mesh, merchant):
    address = f"127.0.0.1:{mesh.ports.grpc['vault']}"
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raised:
        vault_pb2_grpc.VaultServiceStub(channel).GetPaymentMethod(
            vault_pb2.GetPaymentMethodRequest(id=f"pm_{cards.VISA}"),
            metadata=(("authorization", f"Bearer {merchant.secret_key}"),),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert cards.VISA not in (raised.value.details() or "")

    response = call(mesh.url(f"/v1/payment_methods/pm_{cards.VISA}"), headers=merchant.auth())
    assert response.status in (400, 404)
    assert cards.VISA not in json.dumps(response.body)
