"""Test doubles that are real servers (a scripted TLS upstream, an in-process relay), and certificates."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relay.lifecycle import RelayServer, ServeOptions
from relay.runtime import Runtime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def require_tool(name: str) -> str:
    """The path of a peer binary; skip without it, except under CI where a missing peer is a failure."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found on PATH (scripts/fetch-peers installs it into .peers/bin)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_fixtures() -> Path:
    """../shared/fixtures; skip without it, except under CI."""
    if not FIXTURES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{FIXTURES} is missing")
        pytest.skip(f"{FIXTURES} is missing")
    return FIXTURES


@dataclass
class ClientFiles:
    """A client certificate, its key and the CA that verifies the upstream, as files."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass
class Pki:
    """Certificates for a test: the upstream's CA and server certificate, and a client certificate."""

    directory: Path
    server_ca: trustme.CA = field(default_factory=trustme.CA)
    client_ca: trustme.CA = field(default_factory=trustme.CA)
    server_identities: tuple[str, ...] = ("127.0.0.1", "localhost")

    def __post_init__(self) -> None:
        self.server_cert = self.server_ca.issue_cert(*self.server_identities)
        self.client_cert = self.client_ca.issue_cert("metrics-relay@test")

    def client_files(self, name: str = "client", cert: trustme.LeafCert | None = None) -> ClientFiles:
        """Write the server CA and a client certificate (by default the good one) into files."""
        cert = cert or self.client_cert
        folder = self.directory / name
        folder.mkdir(exist_ok=True)
        self.server_ca.cert_pem.write_to_path(str(folder / "ca.crt"))
        cert.cert_chain_pems[0].write_to_path(str(folder / "tls.crt"))
        cert.private_key_pem.write_to_path(str(folder / "tls.key"))
        return ClientFiles(folder / "ca.crt", folder / "tls.crt", folder / "tls.key")

    def server_context(self, verify: ssl.VerifyMode = ssl.CERT_REQUIRED) -> ssl.SSLContext:
        """The upstream's TLS context: its certificate, and client certificates checked against client_ca."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        self.client_ca.configure_trust(context)
        context.verify_mode = verify
        return context


def write_other_key(path: Path) -> None:
    """Write a fresh key to `path`: one that belongs to no certificate of the test."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def write_encrypted_key(path: Path) -> None:
    """Write a key protected by a passphrase to `path`."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )


def certificate_with_a_broken_key(cert: trustme.LeafCert) -> bytes:
    """The certificate's PEM with its public key point zeroed: it parses, its key does not."""
    certificate = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    der = bytearray(certificate.public_bytes(serialization.Encoding.DER))
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    end = der.find(spki) + len(spki)
    der[end - 20 : end] = bytes(20)
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der)) + b"-----END CERTIFICATE-----\n"


@dataclass
class Upstream:
    """A real HTTPS server on 127.0.0.1 whose answer is the `handler` of the moment; it records requests."""

    url: str
    requests: list[web.Request]
    handler: Handler


@asynccontextmanager
async def running_upstream(context: ssl.SSLContext | None, handler: Handler) -> AsyncIterator[Upstream]:
    """Serve `handler` over TLS (or plain HTTP when `context` is None) on a free port."""
    upstream = Upstream(url="", requests=[], handler=handler)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        upstream.requests.append(request)
        return await upstream.handler(request)

    app = web.Application()
    app.router.add_get("/metrics", dispatch)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    upstream.url = f"{'https' if context else 'http'}://127.0.0.1:{port}/metrics"
    try:
        yield upstream
    finally:
        await runner.cleanup()


def body_handler(
    body: bytes, content_type: str = "text/plain; version=0.0.4; charset=utf-8", status: int = 200
) -> Handler:
    """An upstream answer with a fixed status, Content-Type and body."""

    async def handle(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, headers={"Content-Type": content_type})

    return handle


def config_yaml(url: str, files: ClientFiles | None = None, extra: str = "", name: str = "test") -> str:
    """A one-upstream relay configuration for `url`, with the client files if given."""
    tls = ""
    if files is not None:
        tls = (
            f"    tls_config:\n      ca_file: {files.ca_file}\n      cert_file: {files.cert_file}\n"
            f"      key_file: {files.key_file}\n"
        )
    return f"upstreams:\n  - name: {name}\n    url: {url}\n{tls}{extra}"


async def request_text(url: str, method: str = "GET", **headers: str) -> tuple[int, str, str]:
    """One request with these headers: the answer's status, Content-Type and text."""
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


@dataclass
class Relay:
    """An in-process relay serving on 127.0.0.1 at `base_url`."""

    base_url: str
    runtime: Runtime
    config_path: Path


@asynccontextmanager
async def running_relay(
    config_text: str,
    directory: Path,
    *,
    shutdown_grace: float = 5.0,
    max_requests: int = 0,
    web_config_file: Path | None = None,
) -> AsyncIterator[Relay]:
    """Write `config_text` to a file in `directory` and serve a relay for it on a free port."""
    config_path = directory / "relay.yml"
    config_path.write_text(config_text, encoding="utf-8")
    options = ServeOptions(
        host="127.0.0.1",
        port=0,
        shutdown_delay=0,
        shutdown_grace=shutdown_grace,
        max_requests=max_requests,
        web_config_file=web_config_file,
    )
    async with RelayServer(config_path, options) as server:
        yield Relay(server.urls[0], server.runtime, config_path)


async def trickle(request: web.Request, first: bytes, pause: float) -> web.StreamResponse:
    """Send `first`, then one byte every `pause` seconds for ever: an upstream that never finishes."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
    await response.prepare(request)
    await response.write(first)
    while True:
        await asyncio.sleep(pause)
        await response.write(b"#")
