"""Key-encryption keys (KEKs) behind one interface, with a version per key:

- `LocalKeyring`: AES-256 keys in a JSON file (or the VAULT_KEYRING variable), for dev and
  tests. `paymesh vault init-keyring` creates the file; it is never committed.
- `AwsKms`: AWS KMS through boto3; each version is a KMS key, data keys are wrapped with
  Encrypt/Decrypt and moved to a new key with ReEncrypt (plaintext never leaves KMS there).

Which version is primary is recorded in the vault's database, not here."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
from abc import ABC, abstractmethod
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault_proxy_svc.config import VaultSettings


class KeyProvider(ABC):
    name: str
    location: str  # where the keys are, for messages: "the keyring at var/vault-keyring.json"

    @abstractmethod
    async def create_version(self) -> str:
        """A new KEK; returns its version id."""

    @abstractmethod
    async def wrap(self, version: str, data_key: bytes, context: dict[str, str]) -> bytes: ...

    @abstractmethod
    async def unwrap(self, version: str, wrapped: bytes, context: dict[str, str]) -> bytes: ...

    async def rewrap(
        self, old_version: str, wrapped: bytes, new_version: str, context: dict[str, str]
    ) -> bytes:
        data_key = await self.unwrap(old_version, wrapped, context)
        return await self.wrap(new_version, data_key, context)


def _aad(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True).encode()


class LocalKeyring(KeyProvider):
    name = "local"

    def __init__(self, path: Path | None = None, inline: str | None = None):
        self._path = path
        self._inline = inline
        self._keys = self._load()
        self._ciphers: dict[str, AESGCM] = {}  # per KEK version: key setup once, not per card
        self.location = f"the keyring at {path}" if inline is None else "VAULT_KEYRING"

    @staticmethod
    def create_file(path: Path) -> bool:
        """Creates an empty keyring if none exists (the vault adds the first KEK when it
        starts); True when it created one."""
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        LocalKeyring._write(path, {})
        return True

    def _load(self) -> dict[str, bytes]:
        if self._inline is not None:
            raw = self._inline
        elif self._path is not None and self._path.exists():
            raw = self._path.read_text()
        else:
            raise OSError(f"no vault keyring at {self._path}: run `paymesh vault init-keyring`")
        return {v: base64.b64decode(k) for v, k in json.loads(raw)["versions"].items()}

    @staticmethod
    def _write(path: Path, keys: dict[str, bytes]) -> None:
        body = {"versions": {v: base64.b64encode(k).decode() for v, k in keys.items()}}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(body, indent=2))
        temporary.chmod(0o600)
        temporary.replace(path)

    def _key(self, version: str) -> bytes:
        if version not in self._keys:
            self._keys = self._load()  # rotated by another process since we loaded
        try:
            return self._keys[version]
        except KeyError:
            raise LookupError(f"unknown KEK version {version!r}") from None

    async def create_version(self) -> str:
        if self._path is None:
            raise OSError("an inline VAULT_KEYRING cannot rotate; use a keyring file")
        self._keys = self._load()
        number = 1 + max((int(v.rsplit("-", 1)[1]) for v in self._keys), default=0)
        version = f"local-{number}"
        self._keys[version] = AESGCM.generate_key(bit_length=256)
        self._write(self._path, self._keys)
        return version

    def _cipher(self, version: str) -> AESGCM:
        cipher = self._ciphers.get(version)
        if cipher is None:
            cipher = self._ciphers[version] = AESGCM(self._key(version))
        return cipher

    async def wrap(self, version: str, data_key: bytes, context: dict[str, str]) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._cipher(version).encrypt(nonce, data_key, _aad(context))

    async def unwrap(self, version: str, wrapped: bytes, context: dict[str, str]) -> bytes:
        return self._cipher(version).decrypt(wrapped[:12], wrapped[12:], _aad(context))


class AwsKms(KeyProvider):
    name = "aws-kms"
    _PREFIX = "aws-kms:"

    def __init__(self, region: str, endpoint_url: str | None = None):
        import boto3

        self._client = boto3.client("kms", region_name=region, endpoint_url=endpoint_url)
        self.location = f"AWS KMS ({region})"

    def _key_id(self, version: str) -> str:
        return version.removeprefix(self._PREFIX)

    async def create_version(self) -> str:
        created = await asyncio.to_thread(
            self._client.create_key, Description="paymesh vault KEK", KeyUsage="ENCRYPT_DECRYPT"
        )
        return self._PREFIX + created["KeyMetadata"]["KeyId"]

    async def wrap(self, version: str, data_key: bytes, context: dict[str, str]) -> bytes:
        reply = await asyncio.to_thread(
            self._client.encrypt,
            KeyId=self._key_id(version),
            Plaintext=data_key,
            EncryptionContext=context,
        )
        return reply["CiphertextBlob"]

    async def unwrap(self, version: str, wrapped: bytes, context: dict[str, str]) -> bytes:
        reply = await asyncio.to_thread(
            self._client.decrypt,
            KeyId=self._key_id(version),
            CiphertextBlob=wrapped,
            EncryptionContext=context,
        )
        return reply["Plaintext"]

    async def rewrap(
        self, old_version: str, wrapped: bytes, new_version: str, context: dict[str, str]
    ) -> bytes:
        reply = await asyncio.to_thread(
            self._client.re_encrypt,
            CiphertextBlob=wrapped,
            SourceKeyId=self._key_id(old_version),
            SourceEncryptionContext=context,
            DestinationKeyId=self._key_id(new_version),
            DestinationEncryptionContext=context,
        )
        return reply["CiphertextBlob"]


def build_key_provider(settings: VaultSettings) -> KeyProvider:
    if settings.kms_provider == "aws-kms":
        return AwsKms(settings.aws_region, settings.aws_kms_endpoint)
    inline = os.environ.get("VAULT_KEYRING")
    return LocalKeyring(None if inline else settings.keyring_file, inline)
