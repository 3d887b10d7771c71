"""Keys from a secret manager. A PSP API key rotates without a restart: the sandbox PSP
(checking API keys, on a port of its own) stops accepting the old key, the secret is changed
where it is kept (a mounted file, or AWS Secrets Manager on moto's server), and the
connector's next call is refused once (401), reads the secret again and goes through with the
new key. No key is ever logged whole. No mesh: the real connector against the real sandbox
server. The services' signing keys are read from Secrets Manager too, and `rotate_keys`
rotates them there."""

from __future__ import annotations

import asyncio
import threading
from http.server import ThreadingHTTPServer

import pytest

from dev.sandbox_psp import Sandbox, make_handler
from gateway_svc.domain.outcomes import PspRefused
from gateway_svc.psp.connectors import SandboxConnector
from paymesh.platform.secrets import AwsSecrets, FileSecrets, RotatingSecret
from paymesh.platform.service_auth import TokenIssuer, TokenVerifier, init_keys, rotate_keys
from tests.support.logs import service_logs
from tests.support.moto import AWS_TEST_ENV, moto_server
from vault_proxy_svc.cards import Card
from vault_proxy_svc.psp import PspRejected, SandboxCards

pytestmark = pytest.mark.integration

KEY_A = "sk_sandbox_rotation_first_AAAA1111"
KEY_B = "sk_sandbox_rotation_second_BBBB2222"
NAME = "sandbox-secret-key"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    for variable, value in AWS_TEST_ENV.items():
        patch.setenv(variable, value)
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint
    patch.undo()


@pytest.fixture
def sandbox():
    """A sandbox PSP that accepts KEY_A only (until the test rolls it)."""
    psp = Sandbox(api_keys=[KEY_A])
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(psp))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield psp, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def charge_across_a_rotation(psp: Sandbox, base: str, key: RotatingSecret, rotate) -> None:
    connector = SandboxConnector(base, 5.0, api_key=key)
    try:
        _, card = psp._create_card({"number": "4242424242424242", "exp_month": 12, "exp_year": 40})
        charge = dict(card=card["id"], amount=1000, currency="eur", capture=True)
        assert (await connector.authorize(**charge, idempotency_key="rot-1")).captured
        psp.api_keys = {KEY_B}  # the PSP rolled the key: the old one is refused from now
        rotate()
        assert (await connector.authorize(**charge, idempotency_key="rot-2")).captured
        assert key.value == KEY_B
        assert psp.stats["unauthorized"] == 1  # refused once, then the new key went through
        assert psp.stats["charges_created"] == 2
    finally:
        await connector.close()


def test_a_rotated_key_in_a_mounted_file_is_used_after_one_401(sandbox, tmp_path):
    psp, base = sandbox
    (tmp_path / NAME).write_text(KEY_A)
    with service_logs() as logs:
        key = RotatingSecret(FileSecrets(tmp_path), NAME, min_reread_seconds=0)
        asyncio.run(
            charge_across_a_rotation(psp, base, key, lambda: (tmp_path / NAME).write_text(KEY_B))
        )
    assert KEY_A not in logs.getvalue() and KEY_B not in logs.getvalue()
    assert "secret_rotated" in logs.getvalue()


def test_a_rotated_key_in_aws_secrets_manager_is_used_after_one_401(sandbox, moto):
    psp, base = sandbox
    source = AwsSecrets("eu-west-1", moto, prefix="paymesh/")
    first = source.write(NAME, KEY_A)
    with service_logs() as logs:
        key = RotatingSecret(source, NAME, min_reread_seconds=0)
        asyncio.run(charge_across_a_rotation(psp, base, key, lambda: source.write(NAME, KEY_B)))
    assert source.read(NAME).version != first.version
    assert source.names() == [NAME]
    # The timer alone picks up a rotation too, with no call refused.
    source.write(NAME, KEY_A)

    async def timer() -> None:
        refresh = asyncio.create_task(key.refresh(0.05))
        for _ in range(200):
            if key.value == KEY_A:
                break
            await asyncio.sleep(0.02)
        refresh.cancel()

    asyncio.run(timer())
    assert key.value == KEY_A
    assert KEY_A not in logs.getvalue() and KEY_B not in logs.getvalue()


def test_signing_keys_in_aws_secrets_manager_rotate_with_an_overlap(moto):
    source = AwsSecrets("eu-west-1", moto, prefix="paymesh-test/keys/")
    assert init_keys(source, ["gateway", "vault"]) == ["gateway", "vault"]
    issuer = TokenIssuer("gateway", source, reload_seconds=0)
    verifier = TokenVerifier("vault", source, reload_seconds=3600, min_reload_seconds=0)
    before = issuer.token_for("vault")
    assert verifier.verify(before).name == "gateway"
    with service_logs() as logs:
        rotate_keys(source, ["gateway"], overlap_seconds=600)
        after = issuer.token_for("vault")
        assert after != before
        assert verifier.verify(after).name == "gateway"
        assert verifier.verify(before).name == "gateway"
    assert "gateway.pub.until-" in " ".join(source.names("gateway."))
    assert "PRIVATE KEY" not in logs.getvalue()


def test_the_vault_creates_a_card_with_a_rotated_key_and_a_key_the_psp_never_takes_fails(
    sandbox, tmp_path
):
    psp, base = sandbox
    (tmp_path / NAME).write_text(KEY_A)
    key = RotatingSecret(FileSecrets(tmp_path), NAME, min_reread_seconds=0)
    card = Card("4242424242424242", 12, 2040, "123", "visa")

    async def scenario() -> None:
        cards = SandboxCards(base, key)
        connector = SandboxConnector(base, 5.0, api_key=key)
        try:
            assert (await cards.create(card, "123", "card-1")).startswith("card_")
            psp.api_keys = {KEY_B}
            (tmp_path / NAME).write_text(KEY_B)
            assert (await cards.create(card, "123", "card-2")).startswith("card_")
            assert key.value == KEY_B
            psp.api_keys = {"sk_sandbox_nobody_has_this_one_0000"}  # no source holds it
            with pytest.raises(PspRejected):
                await cards.create(card, "123", "card-3")
            with pytest.raises(PspRefused, match="invalid_api_key"):
                await connector.find("rot-none")
        finally:
            await cards.close()
            await connector.close()

    asyncio.run(scenario())
    assert psp.stats["unauthorized"] == 3  # once each: a key that did not change is not resent
