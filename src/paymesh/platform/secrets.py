"""Secrets: the PSPs' API keys and the services' signing keys, read from a `SecretSource`.

- `EnvSecrets`: values the settings read from environment variables (development: each has
  a development default in the service's settings).
- `FileSecrets`: a directory of files, one secret a file, as Kubernetes mounts a Secret
  (`PAYMESH_SECRETS_DIR`; `PAYMESH_KEYS_DIR` is one for the signing keys). A file's
  modification time is when its value changed.
- `AwsSecrets`: AWS Secrets Manager through boto3 (moto's server in tests), each secret named
  `PAYMESH_AWS_SECRETS_PREFIX` + its name; a version's creation date is when its value
  changed.

A `RotatingSecret` holds one secret's current value and reads it again on demand (a PSP that
answers 401: its key was rotated) and on a timer, so that a rotated key is picked up without
a restart. A key is only ever logged as its last 4 characters (`masked`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

log = structlog.get_logger(__name__)

# A secret's name: a file's name (one folder level allowed: `audit/k1.key`).
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)?")
SourceKind = Literal["env", "files", "aws"]


def masked(value: str | bytes) -> str:
    """How a key may appear in a log: its last 4 characters, nothing else (a key of 8
    characters or fewer shows none)."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return "…" + text[-4:] if len(text) > 8 else "…"


class SecretMissing(LookupError):
    """The source holds no secret of that name."""


@dataclass(frozen=True)
class Secret:
    name: str
    value: str
    version: str  # changes whenever the value may have
    changed_at: float | None  # when the value was set (epoch seconds); None: unknown

    def __repr__(self) -> str:  # never the value, whoever prints it
        return f"Secret({self.name!r}, {masked(self.value)!r}, version={self.version!r})"

    def age_seconds(self, now: float | None = None) -> float | None:
        if self.changed_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.changed_at)


class SecretSource(Protocol):
    location: str

    def read(self, name: str) -> Secret:
        """The secret `name` as the source holds it now; raises SecretMissing."""
        ...

    def names(self, prefix: str = "") -> list[str]:
        """The names of the secrets held whose name starts with `prefix`."""
        ...

    def write(self, name: str, value: str) -> Secret:
        """Sets `name` to `value` (a new version); the secret as read back."""
        ...

    def delete(self, name: str) -> None: ...


def _checked(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"not a secret name: {name!r}")
    return name


class EnvSecrets:
    """Values read from the environment by the settings (development)."""

    location = "environment"

    def __init__(self, values: Mapping[str, str]):
        self._values = dict(values)

    def read(self, name: str) -> Secret:
        if name not in self._values:
            raise SecretMissing(f"no secret {name!r} in the environment's settings")
        return Secret(name, self._values[name], "env", None)

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self._values if n.startswith(prefix))

    def write(self, name: str, value: str) -> Secret:
        raise PermissionError("secrets from the environment are set where the process starts")

    def delete(self, name: str) -> None:
        raise PermissionError("secrets from the environment are set where the process starts")


class FileSecrets:
    """A directory of files, one secret a file (trailing whitespace dropped)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.location = str(directory)

    def read(self, name: str) -> Secret:
        path = self.directory / _checked(name)
        try:
            # Kubernetes swaps a mounted Secret's files through a symlink: stat follows it.
            stat = path.stat()
            value = path.read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            raise SecretMissing(f"no secret {name!r} in {self.directory}") from None
        return Secret(name, value, f"{stat.st_mtime_ns}-{stat.st_ino}", stat.st_mtime)

    def names(self, prefix: str = "") -> list[str]:
        found = []
        folder, _, _ = prefix.rpartition("/")
        directory = self.directory / folder if folder else self.directory
        if not directory.is_dir():
            return []
        for path in directory.iterdir():
            name = f"{folder}/{path.name}" if folder else path.name
            if path.is_file() and not path.name.startswith(".") and name.startswith(prefix):
                found.append(name)
        return sorted(found)

    def write(self, name: str, value: str) -> Secret:
        """Written whole or not at all (a reader never sees half a key), readable by the
        owner only."""
        path = self.directory / _checked(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_name(f".{path.name}.partial")
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(value)
        partial.replace(path)
        return self.read(name)

    def delete(self, name: str) -> None:
        (self.directory / _checked(name)).unlink(missing_ok=True)


class AwsSecrets:
    """AWS Secrets Manager (boto3). Calls block: an async caller runs them in a thread
    (`RotatingSecret` does)."""

    def __init__(self, region: str, endpoint_url: str | None = None, prefix: str = "paymesh/"):
        import boto3  # type: ignore[import-untyped]

        self._client: Any = boto3.client(
            "secretsmanager", region_name=region, endpoint_url=endpoint_url
        )
        self._prefix = prefix
        self.location = f"AWS Secrets Manager ({region}, {prefix}*)"

    def read(self, name: str) -> Secret:
        try:
            found = self._client.get_secret_value(SecretId=self._prefix + _checked(name))
        except self._client.exceptions.ResourceNotFoundException:
            raise SecretMissing(f"no secret {self._prefix}{name} in {self.location}") from None
        created = found.get("CreatedDate")
        return Secret(
            name,
            found["SecretString"],
            found["VersionId"],
            created.timestamp() if isinstance(created, datetime) else None,
        )

    def names(self, prefix: str = "") -> list[str]:
        names = []
        pages = self._client.get_paginator("list_secrets").paginate(
            Filters=[{"Key": "name", "Values": [self._prefix + prefix]}]
        )
        for page in pages:
            for entry in page["SecretList"]:
                name = entry["Name"]
                # The filter matches by prefix word, not strictly: check it here.
                if name.startswith(self._prefix + prefix) and not entry.get("DeletedDate"):
                    names.append(name.removeprefix(self._prefix))
        return sorted(names)

    def write(self, name: str, value: str) -> Secret:
        secret_id = self._prefix + _checked(name)
        try:
            self._client.put_secret_value(SecretId=secret_id, SecretString=value)
        except self._client.exceptions.ResourceNotFoundException:
            self._client.create_secret(Name=secret_id, SecretString=value)
        return self.read(name)

    def delete(self, name: str) -> None:
        with contextlib.suppress(self._client.exceptions.ResourceNotFoundException):
            self._client.delete_secret(
                SecretId=self._prefix + _checked(name), ForceDeleteWithoutRecovery=True
            )


def build_source(
    kind: SourceKind,
    *,
    env_values: Mapping[str, str] | None = None,
    directory: Path | None = None,
    aws_region: str = "eu-west-1",
    aws_endpoint: str | None = None,
    aws_prefix: str = "paymesh/",
) -> SecretSource:
    if kind == "files":
        if directory is None:
            raise ValueError("PAYMESH_SECRETS_SOURCE=files needs PAYMESH_SECRETS_DIR")
        return FileSecrets(directory)
    if kind == "aws":
        return AwsSecrets(aws_region, aws_endpoint, aws_prefix)
    return EnvSecrets(env_values or {})


def report_age(gauge: Any) -> Callable[[Secret], None]:
    """An `on_read` that keeps a Prometheus gauge (a labelled child) at the age of the
    version read; nothing is reported for a secret of unknown age (an env var)."""

    def on_read(secret: Secret) -> None:
        if secret.changed_at is not None:
            changed_at = secret.changed_at
            gauge.set_function(lambda: max(0.0, time.time() - changed_at))

    return on_read


class RotatingSecret:
    """One secret's current value: read at start (a missing secret fails the start), again on
    `reread()` (at most once every `min_reread_seconds`: a burst of 401s reads once) and
    every `refresh_seconds` while `refresh()` runs. `on_read` is told each version read
    (the key-age gauges)."""

    def __init__(
        self,
        source: SecretSource,
        name: str,
        *,
        min_reread_seconds: float = 1.0,
        on_read: Callable[[Secret], None] | None = None,
    ):
        self._source = source
        self._name = name
        self._min_reread = min_reread_seconds
        self._on_read = on_read
        self._lock = asyncio.Lock()
        self._secret = source.read(name)
        self._read_at = float("-inf")  # the first reread reads, whenever it comes
        log.info(
            "secret_loaded",
            secret_name=name,
            key=masked(self._secret.value),
            source=source.location,
        )
        if on_read is not None:
            on_read(self._secret)

    @classmethod
    def fixed(cls, value: str, name: str = "api-key") -> RotatingSecret:
        """A secret that never changes (tests, tools)."""
        return cls(EnvSecrets({name: value}), name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def value(self) -> str:
        return self._secret.value

    @property
    def secret(self) -> Secret:
        return self._secret

    async def reread(self, seen: str | None = None) -> bool:
        """Reads the secret again; whether its value changed. `seen`: the value the caller
        was refused with; if the value held already differs (another call read it again in
        the meantime), that is a change and nothing is read."""
        async with self._lock:
            if seen is not None and seen != self._secret.value:
                return True
            if time.monotonic() - self._read_at < self._min_reread:
                return False
            self._read_at = time.monotonic()
            fresh = await asyncio.to_thread(self._source.read, self._name)
            return self._take(fresh)

    def _take(self, fresh: Secret) -> bool:
        changed = fresh.value != self._secret.value
        if changed:
            log.info(
                "secret_rotated",
                secret_name=self._name,
                old_key=masked(self._secret.value),
                new_key=masked(fresh.value),
                source=self._source.location,
            )
        self._secret = fresh
        if self._on_read is not None:
            self._on_read(fresh)
        return changed

    async def refresh(self, every_seconds: float) -> None:
        """Reads the secret again every `every_seconds` until cancelled (0: never)."""
        if every_seconds <= 0:
            return
        while True:
            await asyncio.sleep(every_seconds)
            try:
                async with self._lock:
                    self._read_at = time.monotonic()
                    self._take(await asyncio.to_thread(self._source.read, self._name))
            except Exception as error:  # kept: the value held still works, or a 401 says so
                log.warning(
                    "secret_refresh_failed", secret_name=self._name, error=type(error).__name__
                )
