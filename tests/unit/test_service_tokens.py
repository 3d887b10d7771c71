"""A service token that is not one is refused as unauthenticated, whatever its claims hold."""

from __future__ import annotations

import base64
import json

import pytest

from paymesh.platform.problems import Unauthenticated
from paymesh.platform.service_auth import TokenVerifier


def _unsigned_token(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'EdDSA', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize("issuer", ["nobody", ["gateway"], {"name": "gateway"}, 7, None])
def test_a_token_from_no_known_issuer_is_unauthenticated(tmp_path, issuer):
    verifier = TokenVerifier("vault", tmp_path)
    with pytest.raises(Unauthenticated) as refused:
        verifier.verify(_unsigned_token({"iss": issuer, "aud": "vault"}))
    assert refused.value.reason == "invalid_service_token"
