"""Certificates for the benchmarks' mTLS upstreams: a server CA and a client CA from trustme, as files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class PkiFiles:
    """PEM files: the upstream's certificate and key, the client's, and the CA that trusts each."""

    server_cert: Path
    server_key: Path
    server_ca: Path  # verifies the upstream (given to the relay and to the proxies)
    client_cert: Path
    client_key: Path
    client_ca: Path  # verifies the client certificate (given to the upstream)

    def server_context(self) -> ssl.SSLContext:
        """An upstream's TLS context that requires a client certificate from the client CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.client_ca))
        context.load_cert_chain(self.server_cert, self.server_key)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client's TLS context presenting the client certificate and trusting the server CA."""
        context = ssl.create_default_context(cafile=str(self.server_ca))
        context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def relay_tls_yaml(self) -> str:
        """The `tls_config` block of a relay upstream (indented for a list item)."""
        return (
            f"    tls_config:\n      ca_file: {self.server_ca}\n"
            f"      cert_file: {self.client_cert}\n      key_file: {self.client_key}\n"
        )


def write_pki(directory: Path) -> PkiFiles:
    """Issue a server certificate for 127.0.0.1/localhost and a client certificate; write them as PEM."""
    directory.mkdir(parents=True, exist_ok=True)
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server = server_ca.issue_cert(*SERVER_NAMES)
    client = client_ca.issue_cert("metrics-relay@bench")
    files = PkiFiles(
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        server_ca=directory / "server-ca.crt",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        client_ca=directory / "client-ca.crt",
    )
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    server_ca.cert_pem.write_to_path(str(files.server_ca))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    client_ca.cert_pem.write_to_path(str(files.client_ca))
    return files
