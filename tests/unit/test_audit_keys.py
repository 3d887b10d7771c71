"""The audit key: the newest signs, every one kept verifies, a missing one is named."""

from __future__ import annotations

import pytest

from paymesh.platform.audit_keys import (
    AuditKeyMissing,
    AuditKeys,
    Head,
    add_audit_key,
    init_audit_key,
)

HEAD = Head("gateway.payment_audit", "acct_1", 7, 3, 42, b"\x01" * 32, 3)


def test_init_creates_one_key_and_then_leaves_it_alone(tmp_path):
    assert init_audit_key(tmp_path) == "k1"
    first = (tmp_path / "audit" / "k1.key").read_text()
    assert init_audit_key(tmp_path) is None
    assert (tmp_path / "audit" / "k1.key").read_text() == first
    assert (tmp_path / "audit" / "k1.key").stat().st_mode & 0o077 == 0


def test_the_highest_numbered_key_signs_and_older_signatures_still_verify(tmp_path):
    init_audit_key(tmp_path)
    old_id, old_mac = AuditKeys.load(tmp_path).sign(HEAD)
    for _ in range(10):
        add_audit_key(tmp_path)
    keys = AuditKeys.load(tmp_path)
    new_id, new_mac = keys.sign(HEAD)
    assert (old_id, new_id) == ("k1", "k11")  # by number: k11 after k9
    assert keys.verifies(HEAD, old_id, old_mac)
    assert keys.verifies(HEAD, new_id, new_mac)


@pytest.mark.parametrize(
    "changed",
    [
        Head("gateway.payment_audit", "acct_1", 7, 3, 42, b"\x02" * 32, 3),  # another hash
        Head("gateway.payment_audit", "acct_1", 7, 2, 42, b"\x01" * 32, 3),  # another seq
        Head("gateway.payment_audit", "acct_1", 7, 3, 42, b"\x01" * 32, 2),  # another count
        Head("rebill.rebill_audit", "acct_1", 7, 3, 42, b"\x01" * 32, 3),  # another table
    ],
)
def test_a_signature_does_not_verify_another_head(tmp_path, changed):
    init_audit_key(tmp_path)
    keys = AuditKeys.load(tmp_path)
    key_id, mac = keys.sign(HEAD)
    assert not keys.verifies(changed, key_id, mac)


def test_a_signature_by_a_key_not_at_hand_is_refused_by_name(tmp_path):
    init_audit_key(tmp_path)
    keys = AuditKeys.load(tmp_path)
    with pytest.raises(AuditKeyMissing, match="'k2'"):
        keys.verifies(HEAD, "k2", b"\x00" * 32)


def test_no_key_at_all_says_how_to_make_one(tmp_path):
    with pytest.raises(AuditKeyMissing, match="paymesh keys init"):
        AuditKeys.load(tmp_path)
