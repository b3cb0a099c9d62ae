"""UpstreamClient.fetch against real TLS servers on 127.0.0.1: each failure's reason and explanation."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509

from bench.nginx import mtls_file_server, running_nginx
from bench.pki import PkiFiles
from relay.errors import ScrapeError
from relay.loading import load_config
from relay.upstream import MAX_CONCURRENT_REQUESTS, UpstreamClient
from tests.support import ClientFiles, Pki, body_handler, config_yaml, require_tool, running_upstream
from tests.test_errors import assert_presentable

BODY = b"# TYPE up gauge\nup 1\n"
GOOD_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY)
)


def expired_files(pki: Pki) -> ClientFiles:
    """A client certificate from the upstream's client CA that expired at 2021-01-01T00:00:00Z."""
    expired = pki.client_ca.issue_cert(
        "metrics-relay@test",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    return pki.client_files("expired", expired)


def stranger_files(pki: Pki) -> ClientFiles:
    """A client certificate from a CA the upstream does not trust."""
    return pki.client_files("stranger", trustme.CA().issue_cert("stranger@test"))


def no_certificate(pki: Pki) -> str:
    """tls_config with the server's CA only: no client certificate."""
    return f"    tls_config:\n      ca_file: {pki.client_files().ca_file}\n"


async def fetch_failure(url: str, directory: Path, files: ClientFiles | None, extra: str = "") -> ScrapeError:
    """Fetch `url` as the relay does, body included, and return the ScrapeError it raised."""
    (directory / "relay.yml").write_text(config_yaml(url, files, extra), encoding="utf-8")
    config = load_config(directory / "relay.yml")
    async with aiohttp.ClientSession() as session:
        client = UpstreamClient(config.upstreams[0], session)
        with pytest.raises(ScrapeError) as caught:
            await read_whole_body(client)
    assert_presentable(caught.value)
    return caught.value


async def read_whole_body(client: UpstreamClient) -> bytes:
    """Fetch through `client` and read the body to its end."""
    async with asyncio.timeout(10), client.fetch(5) as body:
        return b"".join([chunk async for chunk in body.chunks()])


@contextmanager
def alerting_upstream(context: ssl.SSLContext) -> Iterator[str]:
    """A blocking TLS server in a thread, as Go's (kube-apiserver) behaves: it refuses a client certificate
    with a TLS alert rather than a bare close; a good client gets GOOD_ANSWER. Yields its https URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(5)
            tls = context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
            try:
                tls.do_handshake()
                tls.recv(65536)
                tls.sendall(GOOD_ANSWER)
            except OSError:  # the refusal: the alert has been sent
                linger_and_close(tls)
            else:
                tls.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}/metrics"
    finally:
        stop.set()
        thread.join()
        listener.close()


def linger_and_close(connection: socket.socket) -> None:
    """Close after reading what the client sent: closing with unread data would be a reset, which can
    overtake the alert."""
    connection.shutdown(socket.SHUT_WR)
    with contextlib.suppress(OSError):
        while connection.recv(65536):
            pass
    connection.close()


@dataclass(frozen=True)
class Refusal:
    """A client certificate case and what the relay must say about it."""

    files: Callable[[Pki], ClientFiles | None]
    settings: Callable[[Pki], str]
    message: str
    cause: str
    action: str


REFUSALS = {
    "expired": Refusal(
        expired_files,
        lambda _: "",
        "",
        "the client certificate expired at 2021-01-01T00:00:00Z",
        "openssl x509 -noout -startdate -enddate -in {cert_file}",
    ),
    "missing": Refusal(
        lambda _: None,
        no_certificate,
        "",
        "no client certificate is configured (tls_config.cert_file and key_file)",
        "set tls_config.cert_file and key_file",
    ),
    "other CA": Refusal(
        stranger_files,
        lambda _: "",
        "",
        "",
        "check that the upstream trusts the CA that signed the client certificate",
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
async def test_refused_client_certificate_closed_after_the_handshake(pki, tmp_path, case):
    """A TLS 1.3 server that just closes after refusing the certificate: explained with the relay's facts."""
    files = case.files(pki)
    async with running_upstream(pki.server_context(), body_handler(BODY)) as upstream:
        error = await fetch_failure(upstream.url, tmp_path, files, case.settings(pki))
    assert error.reason == "tls"
    assert error.message == "upstream closed the connection before answering"
    assert "TLS 1.3 servers close the connection so when they refuse the client certificate" in error.cause
    assert case.cause in error.cause
    assert case.action.format(cert_file=files.cert_file if files else "") in error.action


ALERTS = {
    "expired": ("sslv3 alert certificate expired", "the client certificate expired at 2021-01-01T00:00:00Z"),
    "missing": ("tlsv13 alert certificate required", "no client certificate is configured"),
    "other CA": ("tlsv1 alert unknown ca", "the upstream does not trust the CA that signed the client cert"),
}


@pytest.mark.parametrize("name", ALERTS)
async def test_refused_client_certificate_with_an_alert(pki, tmp_path, name):
    """A server that sends a TLS alert (as Go does): the alert is named, the cause is the relay's finding."""
    case = REFUSALS[name]
    alert, cause = ALERTS[name]
    files = case.files(pki)
    with alerting_upstream(pki.server_context()) as url:
        error = await fetch_failure(url, tmp_path, files, case.settings(pki))
    assert error.reason == "tls"
    assert error.message == f"upstream refused the client certificate (TLS alert: {alert})"
    assert cause in error.cause
    assert case.action.format(cert_file=files.cert_file if files else "") in error.action
    assert "SSLError: SSL" in error.detail


async def test_the_alerting_server_serves_a_good_client(pki, tmp_path):
    """The alerting test server answers a client with a good certificate (so its refusals are real ones)."""
    with alerting_upstream(pki.server_context()) as url:
        (tmp_path / "relay.yml").write_text(config_yaml(url, pki.client_files()), encoding="utf-8")
        async with aiohttp.ClientSession() as session:
            client = UpstreamClient(load_config(tmp_path / "relay.yml").upstreams[0], session)
            assert await read_whole_body(client) == BODY


@pytest.mark.parametrize(
    ("server_name", "checked"),
    [("", "127.0.0.1 (the host of url)"), ("other", "other (tls_config.server_name)")],
)
async def test_wrong_server_name_lists_the_certificates_names(tmp_path, server_name, checked):
    """A certificate for `kubernetes` reached by IP: the names it carries, and server_name: kubernetes."""
    pki = Pki(tmp_path, server_identities=("kubernetes", "kubernetes.default.svc"))
    extra = f"      server_name: {server_name}\n" if server_name else ""
    async with running_upstream(pki.server_context(), body_handler(BODY)) as upstream:
        error = await fetch_failure(upstream.url, tmp_path, pki.client_files(), extra)
    port = upstream.url.split(":")[2].split("/")[0]
    assert error.reason == "tls"
    assert error.message == f"upstream certificate is not valid for {checked.split()[0]}"
    assert error.cause == (
        f"the certificate 127.0.0.1:{port} presented names kubernetes, kubernetes.default.svc, not {checked}"
    )
    assert error.action == "set `tls_config.server_name: kubernetes` (a name the certificate carries)"


async def test_a_ca_that_does_not_sign_the_server_names_issuer_and_ca_file(pki, tmp_path):
    """ca_file from another CA: the issuer of the presented certificate and the ca_file in use are named."""
    files = pki.client_files()
    other_ca = trustme.CA()
    other_ca.cert_pem.write_to_path(str(files.ca_file))
    issuer = x509.load_pem_x509_certificate(pki.server_ca.cert_pem.bytes()).subject.rfc4514_string()
    async with running_upstream(pki.server_context(), body_handler(BODY)) as upstream:
        error = await fetch_failure(upstream.url, tmp_path, files)
    assert error.reason == "tls"
    assert error.message == "upstream certificate not trusted: unable to get local issuer certificate"
    assert f"was issued by {issuer}" in error.cause
    assert f"tls_config.ca_file ({files.ca_file})" in error.cause
    assert "openssl s_client -connect 127.0.0.1:" in error.action
    assert "code 20" in error.detail


async def test_refused_connection(pki, tmp_path):
    """Nothing listening: connect, naming the address, port and what to check."""
    async with running_upstream(pki.server_context(), body_handler(BODY)) as upstream:
        url = upstream.url  # the port is free again once the upstream stops
    error = await fetch_failure(url, tmp_path, pki.client_files())
    address = url.removeprefix("https://").removesuffix("/metrics")
    assert error.reason == "connect"
    assert error.message == "upstream refused the connection"
    assert error.cause == f"nothing listens on {address}, or a firewall rejects the connection"
    assert "port 6443" in error.action
    assert error.detail.endswith("ConnectionRefusedError: ECONNREFUSED (Connection refused)")


@contextmanager
def closing_server() -> Iterator[int]:
    """A TCP server that accepts and closes each connection at once; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize(
    ("scheme", "reason", "message"),
    [
        ("https", "connect", "upstream closed the connection during the TLS handshake"),
        ("http", "connect", "upstream closed the connection before answering"),
    ],
)
async def test_closed_connection(pki, tmp_path, scheme, reason, message):
    """An upstream that closes at once, with a good certificate configured: the network, not a refusal."""
    with closing_server() as port:
        files = pki.client_files() if scheme == "https" else None
        error = await fetch_failure(f"{scheme}://127.0.0.1:{port}/metrics", tmp_path, files)
    assert (error.reason, error.message) == (reason, message)
    assert f"127.0.0.1:{port}" in error.cause


async def test_closed_in_the_handshake_with_an_expired_certificate_is_a_refusal(pki, tmp_path):
    """A close in the handshake while the relay's certificate is expired: that certificate is the cause."""
    files = expired_files(pki)
    with closing_server() as port:
        error = await fetch_failure(f"https://127.0.0.1:{port}/metrics", tmp_path, files)
    assert error.reason == "tls"
    assert "the client certificate expired at 2021-01-01T00:00:00Z" in error.cause
    assert f"-in {files.cert_file}" in error.action


async def test_plain_http_server_behind_an_https_url(pki, tmp_path):
    """An https url pointing at a plain HTTP server: says that it does not speak TLS."""
    async with running_upstream(None, body_handler(BODY)) as upstream:
        error = await fetch_failure(upstream.url.replace("http:", "https:"), tmp_path, pki.client_files())
    assert error.reason == "tls"
    assert "wrong version number" in error.message
    assert "does not speak TLS" in error.cause


async def cut_off(request: web.Request) -> web.StreamResponse:
    """Announces BODY's length, sends half of it and closes the connection."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
    response.content_length = len(BODY)
    await response.prepare(request)
    await response.write(BODY[: len(BODY) // 2])
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.close()
    return response


ANSWERS = {
    "401": (
        body_handler(b"Unauthorized", status=401),
        "",
        "http_status",
        "upstream answered HTTP 401 Unauthorized",
        "did not recognise the relay's credentials",
        "--client-ca-file",
    ),
    "403": (
        body_handler(b'forbidden: User "x" cannot get path "/metrics"', status=403),
        "",
        "http_status",
        "upstream answered HTTP 403 Forbidden",
        "may not read /metrics",
        'nonResourceURLs: ["/metrics"]',
    ),
    "404": (
        body_handler(b"404: Not Found", status=404),
        '    params:\n      hosting: ["true"]\n',
        "http_status",
        "upstream answered HTTP 404 Not Found",
        "the upstream has nothing at /metrics?hosting=true",
        "(?hosting=true)",
    ),
    "503": (
        body_handler(b"", status=503),
        "",
        "http_status",
        "upstream answered HTTP 503 Service Unavailable",
        "failed to produce its metrics",
        "the next scrape tries again",
    ),
    "html": (
        body_handler(b"<html></html>", "text/html; charset=utf-8"),
        "",
        "content_type",
        "upstream Content-Type is 'text/html; charset=utf-8', expected 'text/plain;version=0.0.4'",
        "a web page",
        "point url at the Prometheus metrics endpoint",
    ),
    "json": (
        body_handler(b"{}", "application/json"),
        "",
        "content_type",
        "upstream Content-Type is 'application/json', expected 'text/plain;version=0.0.4'",
        "an API response",
        "point url at the Prometheus metrics endpoint",
    ),
    "cut off": (
        cut_off,
        "",
        "body",
        "upstream body broke off before its end",
        "closed the connection before the body's announced end",
        "proxy's timeouts",
    ),
    "too big": (
        body_handler(BODY * 100),
        "    body_size_limit: 1KB\n",
        "limit",
        "upstream body exceeds body_size_limit (1024 bytes)",
        "body_size_limit is 1024 bytes for this upstream",
        "raise body_size_limit",
    ),
}


@pytest.mark.parametrize(
    ("handler", "settings", "expected"), [(h, s, e) for h, s, *e in ANSWERS.values()], ids=ANSWERS
)
async def test_bad_answers(pki, tmp_path, handler, settings, expected):
    """Answers the relay cannot relay: status, Content-Type, a body cut off, a limit."""
    reason, message, cause, action = expected
    async with running_upstream(pki.server_context(), handler) as upstream:
        error = await fetch_failure(upstream.url, tmp_path, pki.client_files(), settings)
    assert (error.reason, error.message) == (reason, message)
    assert cause in error.cause
    assert action in error.action


@pytest.mark.parametrize("padding", [0, 100], ids=["whole", "across-the-cut"])
async def test_an_echoed_token_is_redacted_from_the_detail(pki, tmp_path, padding):
    """An upstream that echoes the Authorization header in a 401 body: the token never reaches the detail,
    not even its first part when the snippet's cut falls inside it."""
    token = "s3cr3t-token-value"
    (tmp_path / "token").write_text(token + "\n")

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.Response(status=401, text=f"{'x' * padding}bad {request.headers['Authorization']}")

    async with running_upstream(pki.server_context(), echo) as upstream:
        error = await fetch_failure(
            upstream.url, tmp_path, pki.client_files(), f"    bearer_token_file: {tmp_path / 'token'}\n"
        )
    assert error.reason == "http_status"
    assert "bad Bearer <redacted>" in error.detail or padding
    assert "s3cr3t" not in error.detail
    assert_presentable(error, secrets=(token,))


def nginx_pki(pki: Pki) -> PkiFiles:
    """The test's certificates as the files nginx reads."""
    folder = pki.directory / "nginx-pki"
    folder.mkdir()
    files = PkiFiles(
        *(folder / name for name in ("s.crt", "s.key", "s-ca.crt", "c.crt", "c.key", "c-ca.crt"))
    )
    pki.server_cert.cert_chain_pems[0].write_to_path(str(files.server_cert))
    pki.server_cert.private_key_pem.write_to_path(str(files.server_key))
    pki.server_ca.cert_pem.write_to_path(str(files.server_ca))
    pki.client_cert.cert_chain_pems[0].write_to_path(str(files.client_cert))
    pki.client_cert.private_key_pem.write_to_path(str(files.client_key))
    pki.client_ca.cert_pem.write_to_path(str(files.client_ca))
    return files


@pytest.mark.peer
@pytest.mark.parametrize("name", ["expired", "missing"])
async def test_nginx_answers_a_refused_certificate_with_400(pki, tmp_path, name):
    """nginx (ssl_verify_client on) answers 400 to a missing or expired certificate: the relay says why."""
    require_tool("nginx")
    case = REFUSALS[name]
    files = case.files(pki)
    body_file = tmp_path / "body.prom"
    body_file.write_bytes(BODY)
    server = mtls_file_server(nginx_pki(pki), body_file)
    async with running_nginx(tmp_path / "nginx", [server]):
        url = f"https://127.0.0.1:{server.port}/metrics"
        error = await fetch_failure(url, tmp_path, files, case.settings(pki))
        (tmp_path / "relay.yml").write_text(config_yaml(url, pki.client_files()), encoding="utf-8")
        async with aiohttp.ClientSession() as session:
            client = UpstreamClient(load_config(tmp_path / "relay.yml").upstreams[0], session)
            assert await read_whole_body(client) == BODY  # the good certificate is served
    assert (error.reason, error.message) == ("http_status", "upstream answered HTTP 400 Bad Request")
    assert error.cause == case.cause
    assert case.action.format(cert_file=files.cert_file if files else "") in error.action


async def test_failover_urls_are_tried_in_order_on_connect_failures(pki, tmp_path, caplog):
    """The url refuses the connection: the next address of failover_urls answers, and the log says so."""
    caplog.set_level("INFO")
    async with running_upstream(pki.server_context(), body_handler(BODY)) as gone:
        dead = gone.url
    async with running_upstream(pki.server_context(), body_handler(BODY)) as upstream:
        (tmp_path / "relay.yml").write_text(
            config_yaml(dead, pki.client_files(), f"    failover_urls: [{upstream.url}]\n"), encoding="utf-8"
        )
        config = load_config(tmp_path / "relay.yml")
        async with aiohttp.ClientSession() as session:
            body = await read_whole_body(UpstreamClient(config.upstreams[0], session))
    assert body == BODY
    assert len(upstream.requests) == 1
    assert "trying the next of failover_urls" in caplog.text


async def test_every_unreachable_address_is_named(pki, tmp_path):
    """No address answers: one connect failure naming each address tried, in order."""
    addresses = []
    for _ in range(2):
        async with running_upstream(pki.server_context(), body_handler(BODY)) as gone:
            addresses.append(gone.url)
    error = await fetch_failure(
        addresses[0], tmp_path, pki.client_files(), f"    failover_urls: [{addresses[1]}]\n"
    )
    hosts = [url.removeprefix("https://").removesuffix("/metrics") for url in addresses]
    assert error.reason == "connect"
    assert error.message == (
        f"no address of the upstream could be reached ({hosts[0]}: upstream refused the connection; "
        f"{hosts[1]}: upstream refused the connection)"
    )
    assert error.action.endswith("(url and failover_urls are tried in order)")


async def test_a_tls_failure_does_not_fail_over(pki, tmp_path):
    """Only connect failures move on: an upstream that refuses the certificate is the answer."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as refusing,
        running_upstream(pki.server_context(), body_handler(BODY)) as spare,
    ):
        error = await fetch_failure(
            refusing.url, tmp_path, stranger_files(pki), f"    failover_urls: [{spare.url}]\n"
        )
    assert error.reason == "tls"
    assert spare.requests == []


async def test_requests_to_one_upstream_are_bounded(pki, tmp_path):
    """However many fetches run, at most MAX_CONCURRENT_REQUESTS reach the upstream at once; the rest wait
    their turn and are served."""
    in_flight, most = 0, 0

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1
        return await body_handler(BODY)(request)

    async with running_upstream(pki.server_context(), slow) as upstream:
        (tmp_path / "relay.yml").write_text(config_yaml(upstream.url, pki.client_files()), encoding="utf-8")
        config = load_config(tmp_path / "relay.yml")
        async with aiohttp.ClientSession() as session:
            client = UpstreamClient(config.upstreams[0], session)
            bodies = await asyncio.gather(
                *(read_whole_body(client) for _ in range(MAX_CONCURRENT_REQUESTS + 3))
            )
    assert bodies == [BODY] * (MAX_CONCURRENT_REQUESTS + 3)
    assert most == MAX_CONCURRENT_REQUESTS


@contextmanager
def silent_address() -> Iterator[str]:
    """host:port of a listener whose backlog is full: new connections hang, unanswered, as behind a
    firewall that drops them."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    waiting = []
    try:
        for _ in range(5):
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(listener.getsockname())
            waiting.append(client)
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for client in waiting:
            client.close()
        listener.close()


async def test_an_address_that_never_answers_gets_a_share_of_the_deadline(pki, tmp_path):
    """The url's SYNs go unanswered: after its share of the deadline the failover address is tried and
    answers, well within the scrape's deadline."""
    with silent_address() as silent:
        async with running_upstream(None, body_handler(BODY)) as upstream:
            (tmp_path / "relay.yml").write_text(
                config_yaml(f"http://{silent}/metrics", extra=f"    failover_urls: [{upstream.url}]\n"),
                encoding="utf-8",
            )
            config = load_config(tmp_path / "relay.yml")
            async with aiohttp.ClientSession() as session:
                client = UpstreamClient(config.upstreams[0], session)
                started = asyncio.get_running_loop().time()
                async with asyncio.timeout(10), client.fetch(4) as body:
                    received = b"".join([chunk async for chunk in body.chunks()])
                took = asyncio.get_running_loop().time() - started
    assert received == BODY
    assert 1.5 < took < 3.5  # half of the 4 s deadline went to the silent address


async def test_no_address_answering_names_the_silent_one(pki, tmp_path):
    """Both addresses silent: a connect failure naming each and the time it was given, not a bare 504."""
    with silent_address() as first, silent_address() as second:
        error = await fetch_failure(
            f"http://{first}/metrics", tmp_path, None, f"    failover_urls: [http://{second}/metrics]\n"
        )
    assert error.reason == "connect"
    assert f"{first}: connecting to {first} took longer than 2.5s" in error.message
    assert f"{second}: connecting to {second} took longer than 2.5s" in error.message
