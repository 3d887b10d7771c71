"""The audit key: an HMAC-SHA256 key that signs the audit chains' checkpoints
(paymesh.platform.audit_checkpoints). The database never holds it, so someone who can rewrite
an audit table (and recompute its SHA-256 chain with the database's own digest function)
cannot make a checkpoint that vouches for the result.

Keys live beside the service keys, in `PAYMESH_KEYS_DIR/audit/` as `k<N>.key` (32 random
bytes, hex). The highest N signs; every key present verifies, and each checkpoint records the
id of the key that signed it, so a rotation (`paymesh keys rotate-audit`, which adds the next
N) leaves older checkpoints verifiable as long as their key files are kept."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from paymesh.platform.metrics import AUDIT_KEY_AGE
from paymesh.platform.secrets import FileSecrets, SecretSource, report_age

AUDIT_KEYS_SUBDIR = "audit"
_KEY_FILE = re.compile(r"k([1-9][0-9]*)\.key")


class AuditKeyMissing(OSError):
    pass


def audit_keys_dir(keys_dir: Path) -> Path:
    return keys_dir / AUDIT_KEYS_SUBDIR


def _numbered_keys(directory: Path) -> dict[int, Path]:
    if not directory.is_dir():
        return {}
    numbered = {}
    for path in directory.iterdir():
        match = _KEY_FILE.fullmatch(path.name)
        if match:
            numbered[int(match.group(1))] = path
    return numbered


def add_audit_key(keys_dir: Path) -> str:
    """Writes a new audit key, numbered after the newest; returns its id (it signs from now)."""
    directory = audit_keys_dir(keys_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    number = max(_numbered_keys(directory), default=0) + 1
    path = directory / f"k{number}.key"
    with path.open("x") as file:  # never overwrites a key
        file.write(secrets.token_hex(32))
    path.chmod(0o600)
    return path.stem


def init_audit_key(keys_dir: Path) -> str | None:
    """Creates the first audit key if there is none; returns its id, or None when present."""
    if _numbered_keys(audit_keys_dir(keys_dir)):
        return None
    return add_audit_key(keys_dir)


@dataclass(frozen=True)
class Head:
    """What a checkpoint vouches for: a chain's row at `seq` (its id and hash), and that the
    chain then held `row_count` rows."""

    table: str
    merchant_id: str
    chain: int
    seq: int
    row_id: int
    hash: bytes
    row_count: int


def _message(head: Head) -> bytes:
    fields = [
        head.table,
        head.merchant_id,
        head.chain,
        head.seq,
        head.row_id,
        head.row_count,
        head.hash.hex(),
    ]
    return json.dumps(fields, separators=(",", ":")).encode()


class AuditKeys:
    def __init__(self, keys: dict[str, bytes]):
        if not keys:
            raise AuditKeyMissing("no audit key: run `paymesh keys init`")
        self._keys = keys
        self.signing_id = max(keys, key=lambda key_id: int(key_id[1:]))

    @classmethod
    def load(cls, keys: Path | SecretSource) -> AuditKeys:
        """Every audit key of PAYMESH_KEYS_DIR/audit (or the key store's `audit/k<N>.key`);
        the signing key's age is reported (audit_key_age_seconds)."""
        source = FileSecrets(keys) if isinstance(keys, Path) else keys
        secrets = {}
        for name in source.names(f"{AUDIT_KEYS_SUBDIR}/"):
            match = _KEY_FILE.fullmatch(name.removeprefix(f"{AUDIT_KEYS_SUBDIR}/"))
            if match:
                secrets[f"k{match.group(1)}"] = source.read(name)
        if not secrets:
            raise AuditKeyMissing(
                f"no audit key in {source.location}/{AUDIT_KEYS_SUBDIR}: run `paymesh keys init`"
            )
        loaded = cls({key_id: bytes.fromhex(s.value) for key_id, s in secrets.items()})
        report_age(AUDIT_KEY_AGE)(secrets[loaded.signing_id])
        return loaded

    def sign(self, head: Head) -> tuple[str, bytes]:
        """The signing key's id and its MAC of `head`."""
        key = self._keys[self.signing_id]
        return self.signing_id, hmac.new(key, _message(head), hashlib.sha256).digest()

    def verifies(self, head: Head, key_id: str, mac: bytes) -> bool:
        """Whether `mac` is key `key_id`'s MAC of `head`. Raises AuditKeyMissing when that key
        is not at hand (a deleted key file, or verification on a machine without it)."""
        key = self._keys.get(key_id)
        if key is None:
            raise AuditKeyMissing(f"audit key {key_id!r} is not in PAYMESH_KEYS_DIR/audit")
        expected = hmac.new(key, _message(head), hashlib.sha256).digest()
        return hmac.compare_digest(expected, mac)
