"""Mutual TLS between Envoy and the services and between services: every gRPC port demands a
client certificate from paymesh's CA, every service channel presents its service's own.

`paymesh certs init` makes a development CA and a certificate per identity it is given in one
directory (PAYMESH_TLS_DIR): `ca.crt`, and `<identity>.crt` + `<identity>.key` for each server
(a service: server and client certificate) and each client (client certificate only).
Unset, gRPC is plaintext, which a service accepts only on loopback or with
PAYMESH_ALLOW_PLAINTEXT=true (see config.py). The service token stays the authorization."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=5 * 365)
CERT_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class MutualTls:
    """One identity's certificate and key, and the CA its peers must be signed by."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, tls_dir: Path, identity: str) -> MutualTls:
        files = [tls_dir / "ca.crt", tls_dir / f"{identity}.crt", tls_dir / f"{identity}.key"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise OSError(f"no TLS files {', '.join(missing)}: run `paymesh certs init`")
        ca, cert, key = (f.read_bytes() for f in files)
        return cls(ca, cert, key)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)


def init_certs(tls_dir: Path, servers: Iterable[str], clients: Iterable[str]) -> list[str]:
    """Creates the CA and a certificate for each identity that has none (all of them when the
    CA is new): `servers` (the services) may also serve, `clients` only call. Returns what it
    created."""
    serving = tuple(servers)
    identities = (*serving, *clients)
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = []
    if not (tls_dir / "ca.crt").exists() or not (tls_dir / "ca.key").exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paymesh development CA")])
        ca_cert = (
            _builder(name, name, ca_key.public_key(), CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write(tls_dir, "ca", ca_cert, ca_key)
        created.append("ca")
        for identity in identities:
            (tls_dir / f"{identity}.crt").unlink(missing_ok=True)
    ca_cert = x509.load_pem_x509_certificate((tls_dir / "ca.crt").read_bytes())
    signing_key = serialization.load_pem_private_key((tls_dir / "ca.key").read_bytes(), None)
    assert isinstance(signing_key, ec.EllipticCurvePrivateKey)
    for identity in identities:
        if (tls_dir / f"{identity}.crt").exists() and (tls_dir / f"{identity}.key").exists():
            continue
        _write(tls_dir, identity, *_issue(identity, identity in serving, ca_cert, signing_key))
        created.append(identity)
    return created


def _issue(
    identity: str, serves: bool, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    # A service answers on localhost and, in docker compose, on its service name.
    names: list[x509.GeneralName] = [x509.DNSName(identity)]
    if serves:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        names += [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    validity: datetime.timedelta,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write(
    tls_dir: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    key_path = tls_dir / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    (tls_dir / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
