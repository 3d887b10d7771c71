"""Service identity between services: short-lived tokens signed with each service's Ed25519
key (PyJWT, EdDSA). A caller sends `x-paymesh-service-token`; the callee checks signature,
audience (itself) and expiry with the caller's public key. Keys live in PAYMESH_KEYS_DIR as
`<service>.key` (private, PEM) and `<service>.pub`; `paymesh keys init` creates them for the
identities it is given (the services and `ops`) and they are never committed. The kit knows no
service list: an identity is a name, and the key pairs in PAYMESH_KEYS_DIR are the identities
a service trusts.

Keys are read through a `SecretSource` (paymesh.platform.secrets): the files of
PAYMESH_KEYS_DIR (a mounted Kubernetes Secret works as it is), or AWS Secrets Manager.
`paymesh keys rotate` (`rotate_keys`) gives an identity a new key pair: its old public key
is kept as `<service>.pub.until-<epoch>` and still verifies until then (the overlap window),
and the new key signs from the moment each process reads it (issuers read their key again
every `reload_seconds`; verifiers read the public keys again on a token they cannot verify,
at most once a second, and every `reload_seconds`). Tokens name their key (`kid`). What an
identity derives from its key (`derived_secret`: idempotency digests, the webhook secrets'
box) stays the same across rotations: the first key's digest is kept as `<service>.seed`."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paymesh.platform.metrics import SERVICE_KEY_AGE
from paymesh.platform.problems import Unauthenticated
from paymesh.platform.secrets import FileSecrets, SecretMissing, SecretSource, report_age

log = structlog.get_logger(__name__)

SERVICE_TOKEN_HEADER = "x-paymesh-service-token"  # noqa: S105 - a header name
TOKEN_LIFETIME_SECONDS = 60
RELOAD_SECONDS = 30.0
_PUBLIC = re.compile(r"(?P<identity>[A-Za-z0-9_-]+)\.pub(?:\.until-(?P<until>[0-9]+))?")


def _source(keys: Path | SecretSource) -> SecretSource:
    return FileSecrets(keys) if isinstance(keys, Path) else keys


def _pem(value: str) -> bytes:
    """A key's PEM as its file holds it (the source strips the final newline)."""
    return (value.strip() + "\n").encode()


def key_id(public_pem: bytes) -> str:
    """A public key's id in tokens (`kid`): not secret, stable."""
    return hashlib.sha256(public_pem.strip()).hexdigest()[:16]


def _key_pair() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private.decode(), public.decode()


def rotate_keys(
    source: SecretSource,
    identities: Iterable[str],
    overlap_seconds: float,
    now: float | None = None,
) -> list[str]:
    """Gives each identity a new key pair; its old public key verifies for `overlap_seconds`
    more. Old public keys past their window are removed. Returns the identities rotated."""
    now = time.time() if now is None else now
    until = int(now + overlap_seconds)
    rotated = []
    for identity in identities:
        try:
            old_private = source.read(f"{identity}.key").value
            old_public = source.read(f"{identity}.pub").value
        except SecretMissing:
            raise OSError(f"no key pair for {identity!r}: run `paymesh keys init`") from None
        if f"{identity}.seed" not in source.names(f"{identity}.seed"):
            # HMAC with a key longer than its block hashes the key first: the same secrets.
            source.write(f"{identity}.seed", hashlib.sha256(_pem(old_private)).hexdigest())
        retired = f"{identity}.pub.until-{until}"
        source.write(retired, old_public)
        private, public = _key_pair()
        source.write(f"{identity}.pub", public)  # verifiers may learn it first
        source.write(f"{identity}.key", private)
        for name in source.names(f"{identity}.pub.until-"):
            match = _PUBLIC.fullmatch(name)
            if name != retired and match and match["until"] and int(match["until"]) < now:
                source.delete(name)
        log.info(
            "key_rotated",
            identity=identity,
            old_key_id=key_id(_pem(old_public)),
            new_key_id=key_id(_pem(public)),
            old_key_verifies_until=until,
        )
        rotated.append(identity)
    return rotated


def init_keys(keys: Path | SecretSource, identities: Iterable[str]) -> list[str]:
    """Creates a key pair for each of `identities` that has none; returns those it created."""
    if isinstance(keys, Path):
        keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    source = _source(keys)
    created = []
    for service in identities:
        if source.names(f"{service}.key") == [f"{service}.key"]:
            continue
        private, public = _key_pair()
        source.write(f"{service}.pub", public)
        source.write(f"{service}.key", private)
        created.append(service)
    return created


class TokenIssuer:
    """Mints tokens for calls from `service` to others; reuses one until half its life. Reads
    its key again every `reload_seconds` (a rotated key signs from then on)."""

    def __init__(
        self, service: str, keys: Path | SecretSource, reload_seconds: float = RELOAD_SECONDS
    ):
        self._service = service
        self._source = _source(keys)
        self._reload_seconds = reload_seconds
        self._version = ""
        self._cache: dict[str, tuple[str, float]] = {}
        self._report_age = report_age(SERVICE_KEY_AGE.labels(service))
        try:
            self._load()
        except SecretMissing:
            raise OSError(
                f"no service key {service}.key in {self._source.location}: run `paymesh keys init`"
            ) from None
        seed = self._source.names(f"{service}.seed")
        self._seed = (
            bytes.fromhex(self._source.read(seed[0]).value)
            if seed
            else hashlib.sha256(self._key).digest()
        )

    def _load(self) -> None:
        secret = self._source.read(f"{self._service}.key")
        self._loaded_at = time.monotonic()
        if secret.version == self._version:
            return
        key = _pem(secret.value)
        private = serialization.load_pem_private_key(key, password=None)
        assert isinstance(private, Ed25519PrivateKey)
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        changed = bool(self._version)
        self._key, self._kid, self._version = key, key_id(public), secret.version
        self._cache.clear()
        self._report_age(secret)
        if changed:
            log.info("service_key_reloaded", identity=self._service, key_id=self._kid)

    @property
    def service(self) -> str:
        return self._service

    def derived_secret(self, purpose: str) -> bytes:
        """A secret of this service for `purpose`, the same across key rotations."""
        return hmac.new(self._seed, purpose.encode(), hashlib.sha256).digest()

    def token_for(self, audience: str) -> str:
        now = time.time()
        if time.monotonic() - self._loaded_at >= self._reload_seconds:
            try:
                self._load()
            except (SecretMissing, OSError, ValueError) as error:  # the key held still signs
                log.warning("service_key_reload_failed", error=type(error).__name__)
        cached = self._cache.get(audience)
        if cached and cached[1] > now + TOKEN_LIFETIME_SECONDS / 2:
            return cached[0]
        expires = now + TOKEN_LIFETIME_SECONDS
        claims = {"iss": self._service, "aud": audience, "iat": int(now), "exp": int(expires)}
        token = jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self._kid})
        self._cache[audience] = (token, expires)
        return token


@dataclass(frozen=True)
class ServiceIdentity:
    name: str


class TokenVerifier:
    """Checks tokens addressed to `service`, signed by an identity whose public key we hold:
    the public keys of the source (PAYMESH_KEYS_DIR), each current one and each retired one
    still in its overlap window."""

    def __init__(
        self,
        service: str,
        keys: Path | SecretSource,
        reload_seconds: float = RELOAD_SECONDS,
        min_reload_seconds: float = 1.0,
    ):
        self._service = service
        self._source = _source(keys)
        self._reload_seconds = reload_seconds
        self._min_reload_seconds = min_reload_seconds
        self._load()
        # A caller reuses its token for half its life: check each signature once.
        self._verified: dict[str, tuple[ServiceIdentity, float]] = {}

    def _load(self) -> None:
        keys: dict[str, list[tuple[bytes, float]]] = {}
        for name in self._source.names():
            match = _PUBLIC.fullmatch(name)
            if match is None:
                continue
            until = float(match["until"]) if match["until"] else float("inf")
            try:
                pem = _pem(self._source.read(name).value)
            except SecretMissing:  # removed while listed
                continue
            keys.setdefault(match["identity"], []).append((pem, until))
        self._public_keys = keys
        self._loaded_at = time.monotonic()

    def verify(self, token: str) -> ServiceIdentity:
        return self.verify_at(token, time.time())

    def verify_at(self, token: str, now: float) -> ServiceIdentity:
        """`verify` as at `now` (whose old keys' windows are over then)."""
        cached = self._verified.get(token)
        if cached and cached[1] > now:
            return cached[0]
        since = time.monotonic() - self._loaded_at
        if since >= self._reload_seconds:
            self._load()
        try:
            identity, expires = self._verify(token, now)
        except Unauthenticated:
            if since < self._min_reload_seconds:
                raise
            self._load()  # a key rotated since we read them?
            identity, expires = self._verify(token, now)
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[token] = (identity, expires)
        return identity

    def _verify(self, token: str, now: float) -> tuple[ServiceIdentity, float]:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            # Unverified: whatever the caller wrote, a list included.
            keys = self._public_keys.get(issuer, []) if isinstance(issuer, str) else []
            if not keys:
                raise jwt.InvalidTokenError(f"unknown issuer {issuer!r}")
            kid = jwt.get_unverified_header(token).get("kid")
            # The key the token names first; every other one still valid after it.
            usable = sorted(
                (pem for pem, until in keys if until >= now),
                key=lambda pem: key_id(pem) != kid,
            )
            claims = None
            for pem in usable:
                try:
                    claims = jwt.decode(
                        token,
                        pem,
                        algorithms=["EdDSA"],
                        audience=self._service,
                        options={"require": ["iss", "aud", "exp", "iat"]},
                        leeway=5,
                    )
                    break
                except jwt.InvalidSignatureError:
                    continue
            if claims is None:
                raise jwt.InvalidSignatureError("Signature verification failed")
        except jwt.PyJWTError as error:
            raise Unauthenticated(
                f"invalid service token: {error}", reason="invalid_service_token"
            ) from None
        return ServiceIdentity(claims["iss"]), claims["exp"]
