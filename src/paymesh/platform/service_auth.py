"""Service identity between services: short-lived tokens signed with each service's Ed25519
key (PyJWT, EdDSA). A caller sends `x-paymesh-service-token`; the callee checks signature,
audience (itself) and expiry with the caller's public key. Keys live in PAYMESH_KEYS_DIR as
`<service>.key` (private, PEM) and `<service>.pub`; `paymesh keys init` creates them for the
identities it is given (the services and `ops`) and they are never committed. The kit knows no
service list: an identity is a name, and the key pairs in PAYMESH_KEYS_DIR are the identities
a service trusts."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paymesh.platform.problems import Unauthenticated

SERVICE_TOKEN_HEADER = "x-paymesh-service-token"  # noqa: S105 - a header name
TOKEN_LIFETIME_SECONDS = 60


def init_keys(keys_dir: Path, identities: Iterable[str]) -> list[str]:
    """Creates a key pair for each of `identities` that has none; returns those it created."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = []
    for service in identities:
        private_path = keys_dir / f"{service}.key"
        if private_path.exists():
            continue
        key = Ed25519PrivateKey.generate()
        private_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        private_path.chmod(0o600)
        (keys_dir / f"{service}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        created.append(service)
    return created


class TokenIssuer:
    """Mints tokens for calls from `service` to others; reuses one until half its life."""

    def __init__(self, service: str, keys_dir: Path):
        self._service = service
        path = keys_dir / f"{service}.key"
        if not path.exists():
            raise OSError(f"no service key at {path}: run `paymesh keys init`")
        self._key = path.read_bytes()
        self._cache: dict[str, tuple[str, float]] = {}

    @property
    def service(self) -> str:
        return self._service

    def derived_secret(self, purpose: str) -> bytes:
        """A secret of this service for `purpose`, stable as long as its key pair is."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).digest()

    def token_for(self, audience: str) -> str:
        now = time.time()
        cached = self._cache.get(audience)
        if cached and cached[1] > now + TOKEN_LIFETIME_SECONDS / 2:
            return cached[0]
        expires = now + TOKEN_LIFETIME_SECONDS
        claims = {"iss": self._service, "aud": audience, "iat": int(now), "exp": int(expires)}
        token = jwt.encode(claims, self._key, algorithm="EdDSA")
        self._cache[audience] = (token, expires)
        return token


@dataclass(frozen=True)
class ServiceIdentity:
    name: str


class TokenVerifier:
    """Checks tokens addressed to `service`, signed by an identity whose public key we hold:
    one of the key pairs in `keys_dir`."""

    def __init__(self, service: str, keys_dir: Path):
        self._service = service
        self._public_keys = {path.stem: path.read_bytes() for path in keys_dir.glob("*.pub")}
        # A caller reuses its token for half its life: check each signature once.
        self._verified: dict[str, tuple[ServiceIdentity, float]] = {}

    def verify(self, token: str) -> ServiceIdentity:
        cached = self._verified.get(token)
        if cached and cached[1] > time.time():
            return cached[0]
        identity, expires = self._verify(token)
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[token] = (identity, expires)
        return identity

    def _verify(self, token: str) -> tuple[ServiceIdentity, float]:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            # Unverified: whatever the caller wrote, a list included.
            key = self._public_keys.get(issuer) if isinstance(issuer, str) else None
            if key is None:
                raise jwt.InvalidTokenError(f"unknown issuer {issuer!r}")
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=self._service,
                options={"require": ["iss", "aud", "exp", "iat"]},
                leeway=5,
            )
        except jwt.PyJWTError as error:
            raise Unauthenticated(
                f"invalid service token: {error}", reason="invalid_service_token"
            ) from None
        return ServiceIdentity(claims["iss"]), claims["exp"]
