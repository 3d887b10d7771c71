"""Envelope encryption and the local keyring: ciphertexts are bound to their token, merchant
and mode; rotation adds versions without losing old ones; CVCs are handed out once."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from cryptography.exceptions import InvalidTag

from vault_proxy_svc.cvc_store import CvcStore
from vault_proxy_svc.envelope import Sealed, binding, fingerprint, seal, unseal
from vault_proxy_svc.keys import LocalKeyring

PAN = "4242424242424242"


@pytest.fixture
def keyring(tmp_path):
    path = tmp_path / "keyring.json"
    LocalKeyring.create_file(path)
    return LocalKeyring(path)


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_sealed_card_opens_only_with_its_own_binding(keyring):
    version = run(keyring.create_version())
    context = binding("pm_a", "acct_1", False)
    sealed = run(seal(PAN, context, keyring, version))

    assert PAN.encode() not in sealed.ciphertext + sealed.wrapped_key
    assert run(unseal(sealed, context, keyring)) == PAN
    for other in (
        binding("pm_b", "acct_1", False),  # swapped onto another token
        binding("pm_a", "acct_2", False),  # or another merchant
        binding("pm_a", "acct_1", True),  # or the other mode
    ):
        with pytest.raises(InvalidTag):
            run(unseal(sealed, other, keyring))


def test_every_card_gets_its_own_data_key(keyring):
    version = run(keyring.create_version())
    first = run(seal(PAN, binding("pm_a", "m", False), keyring, version))
    second = run(seal(PAN, binding("pm_a", "m", False), keyring, version))

    assert first.ciphertext != second.ciphertext
    assert first.wrapped_key != second.wrapped_key


def test_rotation_adds_a_version_and_old_ones_still_unwrap(keyring, tmp_path):
    first = run(keyring.create_version())
    context = binding("pm_a", "m", False)
    sealed = run(seal(PAN, context, keyring, first))

    second = run(keyring.create_version())
    moved = run(keyring.rewrap(first, sealed.wrapped_key, second, context))

    assert (first, second) == ("local-1", "local-2")
    assert run(unseal(sealed, context, keyring)) == PAN
    assert run(unseal(Sealed(second, moved, sealed.nonce, sealed.ciphertext), context, keyring))
    # Another process (the CLI) rotated: a reader reloads the file on an unknown version.
    other_process = LocalKeyring(tmp_path / "keyring.json")
    third = run(other_process.create_version())
    assert run(keyring.wrap(third, b"x" * 32, context))
    assert json.loads((tmp_path / "keyring.json").read_text())["versions"].keys() == {
        "local-1",
        "local-2",
        "local-3",
    }


def test_an_inline_keyring_cannot_rotate():
    inline = LocalKeyring(inline=json.dumps({"versions": {}}))
    with pytest.raises(OSError, match="cannot rotate"):
        run(inline.create_version())


def test_fingerprints_are_keyed_and_scoped_to_the_merchant():
    secret, other_secret = b"s" * 32, b"t" * 32

    assert fingerprint(secret, "acct_1", PAN) == fingerprint(secret, "acct_1", PAN)
    assert fingerprint(secret, "acct_1", PAN) != fingerprint(secret, "acct_2", PAN)
    assert fingerprint(secret, "acct_1", PAN) != fingerprint(other_secret, "acct_1", PAN)


def test_a_cvc_serves_every_psp_until_dropped_or_expired():
    store = CvcStore(ttl_seconds=0.05)
    store.put("pm_a", "123")
    store.put("pm_b", "456")

    assert store.peek("pm_a") == "123"
    assert store.peek("pm_a") == "123"  # the next PSP's creation reads it too
    store.drop("pm_a")
    assert store.peek("pm_a") is None
    time.sleep(0.06)
    assert store.peek("pm_b") is None
    store.put("pm_c", "")
    assert store.peek("pm_c") is None
