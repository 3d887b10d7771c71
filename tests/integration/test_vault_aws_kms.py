"""The AWS KMS key provider against moto's KMS server: data keys wrap and unwrap under an
encryption context, rotation adds a KMS key, ReEncrypt moves cards to it, and the vault's
envelope and KEK lifecycle (rotation, re-wrap) work on it, in a database of the test's own."""

from __future__ import annotations

import asyncio

import pytest
from botocore.exceptions import ClientError

from dev.devinfra import create_infra, drop_infra
from paymesh.platform.callers import Merchant
from paymesh.platform.db import create_engine
from paymesh.platform.direct_sql import DirectSql
from tests.support.mesh import base_env, paymesh
from tests.support.moto import AWS_TEST_ENV, moto_server
from vault_proxy_svc.envelope import binding, seal, unseal
from vault_proxy_svc.kek import KekManager
from vault_proxy_svc.keys import AwsKms
from vault_proxy_svc.models import PaymentMethod
from vault_proxy_svc.postgres_card_store import PostgresCardStore
from vault_proxy_svc.tables import payment_methods

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kms(tmp_path_factory, monkeypatch_module):
    for variable, value in AWS_TEST_ENV.items():
        monkeypatch_module.setenv(variable, value)
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield AwsKms("eu-west-1", endpoint), endpoint


@pytest.fixture(scope="module")
def monkeypatch_module():
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def test_a_data_key_round_trips_only_under_its_encryption_context(kms):
    provider, _ = kms

    async def scenario():
        version = await provider.create_version()
        context = binding("pm_abc", "acct_1", False)
        wrapped = await provider.wrap(version, b"k" * 32, context)
        assert await provider.unwrap(version, wrapped, context) == b"k" * 32
        with pytest.raises(ClientError):
            await provider.unwrap(version, wrapped, binding("pm_abc", "acct_2", False))
        newer = await provider.create_version()
        moved = await provider.rewrap(version, wrapped, newer, context)
        assert await provider.unwrap(newer, moved, context) == b"k" * 32

    asyncio.run(scenario())


def test_the_vault_envelope_and_rotation_run_on_kms(kms):
    provider, _ = kms
    infra = create_infra("paymesh_kms_test")
    try:
        paymesh("migrate", "vault", env=base_env(infra))

        async def scenario():
            engine = create_engine(infra.database_url)
            keks = KekManager(engine, provider)
            await keks.ensure_ready()
            assert len(keks.fingerprint_secret) == 32
            first = await keks.primary()
            context = binding("pm_kms", "acct_1", False)
            sealed = await seal("4242424242424242", context, provider, first)
            assert b"4242424242424242" not in sealed.ciphertext
            async with engine.begin() as connection:
                await connection.execute(
                    payment_methods.insert(),
                    {
                        "id": "pm_kms",
                        "merchant_id": "acct_1",
                        "livemode": False,
                        "brand": "visa",
                        "last4": "4242",
                        "exp_month": 12,
                        "exp_year": 2040,
                        "fingerprint": "fp",
                        "kek_version": first,
                        "wrapped_key": sealed.wrapped_key,
                        "nonce": sealed.nonce,
                        "ciphertext": sealed.ciphertext,
                    },
                )

            previous, second = await keks.rotate(actor="test")
            assert previous == first
            assert (await keks.rewrap_once(batch_size=10)).moved == 1
            direct = DirectSql(engine)
            card = await PostgresCardStore(engine, direct).get("pm_kms", Merchant("acct_1", False))
            await direct.close()
            assert isinstance(card, PaymentMethod) and card.sealed is not None
            assert card.sealed.kek_version == second
            assert await unseal(card.sealed, context, provider) == "4242424242424242"
            await engine.dispose()

        asyncio.run(scenario())
    finally:
        drop_infra(infra)
