"""The demo's certificates: a CA, the aggregator's server certificate and the relay's client certificate."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_COMMON_NAME = "metrics-relay-demo"
CLIENT_ORGANIZATION = "system:monitoring"
SERVER_DNS_NAMES = ("localhost", "kubernetes")
SERVER_IP_ADDRESSES = ("127.0.0.1", "::1")
# Certificates start a little in the past so that a clock a few minutes behind still accepts them.
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class DemoPKI:
    """Where the demo's PEM files are: the CA, the server's certificate and key, the client's."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True, slots=True)
class _Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def write_demo_pki(
    directory: Path, *, validity: timedelta = timedelta(days=1), now: datetime | None = None
) -> DemoPKI:
    """Create a fresh CA, server and client certificate and write them as PEM files into `directory`.

    Each file is replaced atomically, so a reader watching the folder (the relay's rotation check) sees the
    old or the new file, never half of one. `now` moves the validity window, e.g. to make expired ones.
    """
    not_before = (now or datetime.now(UTC)) - _CLOCK_SKEW
    not_after = not_before + _CLOCK_SKEW + validity
    ca = _issue_ca(not_before, not_after)
    server = _issue_leaf(ca, _name("kube-apiserver"), not_before, not_after, server=True)
    client = _issue_leaf(
        ca, _name(CLIENT_COMMON_NAME, CLIENT_ORGANIZATION), not_before, not_after, server=False
    )

    directory.mkdir(parents=True, exist_ok=True)
    folder = directory.resolve()
    pki = DemoPKI(
        directory=folder,
        ca_cert=folder / "ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
    )
    _write_atomically(pki.ca_cert, _cert_pem(ca.cert), 0o644)
    _write_atomically(pki.server_cert, _cert_pem(server.cert), 0o644)
    _write_atomically(pki.server_key, _key_pem(server.key), 0o600)
    _write_atomically(pki.client_cert, _cert_pem(client.cert), 0o644)
    _write_atomically(pki.client_key, _key_pem(client.key), 0o600)
    return pki


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    """A subject name; Kubernetes reads the client's CN as the user and O as its group."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue_ca(not_before: datetime, not_after: datetime) -> _Issued:
    """A self-signed CA that may sign leaf certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("metrics-relay demo CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issued(cert, key)


def _issue_leaf(
    ca: _Issued, subject: x509.Name, not_before: datetime, not_after: datetime, *, server: bool
) -> _Issued:
    """A certificate signed by `ca`, for TLS server or TLS client authentication."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key_id = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # Python 3.13's default contexts set VERIFY_X509_STRICT, which requires the authority key id.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), critical=False
        )
    )
    if server:
        alternative_names: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_DNS_NAMES]
        alternative_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IP_ADDRESSES]
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
    return _Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """Key usage for a CA (signs certificates) or an EC leaf (signs handshakes)."""
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


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key unencrypted in PKCS#8, the form Prometheus, Go and OpenSSL all read."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to a sibling temporary file with `mode`, then rename it over `path`."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb", opener=lambda name, flags: os.open(name, flags, mode)) as file:
        # The mode given to open() is narrowed by the umask and ignored when the file already exists.
        os.fchmod(file.fileno(), mode)
        file.write(data)
    os.replace(temporary, path)
