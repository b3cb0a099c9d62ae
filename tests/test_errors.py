"""Every scrape failure as a table: exception -> (reason, message, cause, action), and how it is presented."""

from __future__ import annotations

import datetime
import errno
import os
import re
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_exceptions import ContentLengthError
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import SCRAPE_ERRORS, ClientTLSMaterialError, ScrapeError
from relay.failures import (
    Attempt,
    Diagnosis,
    PresentedCertificate,
    content_type_error,
    deadline_error,
    limit_error,
    status_error,
    translate_client_error,
)
from relay.tls import CertificateFacts, Credentials

SECRET_TOKEN = "s3cr3t-token-value"
LIBRARY_REPRS = re.compile(r"object at 0x|ConnectionKey\(|<[A-Za-z_.]+ object|\(_ssl\.c:\d+\)")
DOUBLED_PUNCTUATION = re.compile(r"\.\.|;;|,,|[.;:,] [.;:,](\s|$)|: *:")


def assert_presentable(error: ScrapeError, secrets: Iterable[str] = ()) -> None:
    """What people see of `error` (explanation and log fields) has no library reprs, doubled punctuation or
    secret, and says what happened, the likely cause and what to do."""
    assert error.message
    assert error.cause
    assert error.action
    assert "\n" not in error.message
    texts = [error.explanation(), *error.log_fields().values()]
    for text in texts:
        assert not LIBRARY_REPRS.search(text), text
        assert not DOUBLED_PUNCTUATION.search(text), text
        for secret in (SECRET_TOKEN, "PRIVATE KEY", *secrets):
            assert secret not in text


def handshake_error(
    client: ssl.SSLContext, server: ssl.SSLContext, server_hostname: str = "kubernetes"
) -> ssl.SSLError:
    """The SSLError a real TLS handshake (in memory) gives the client, a refusal's alert included."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(client_in, client_out, server_hostname=server_hostname)
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_done = False
    for _ in range(10):
        try:
            # After its handshake the client reads: TLS 1.3 servers refuse a certificate only then.
            client_side.read(1) if client_done else client_side.do_handshake()
            client_done = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return exc
        server_in.write(client_out.read())
        try:
            server_side.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            pass  # the server's refusal: its alert is on the way to the client
        client_in.write(server_out.read())
    raise AssertionError("the handshake did not fail")


SERVER_CA = trustme.CA()
CLIENT_CA = trustme.CA()
SERVER_CONTEXT = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
SERVER_CA.issue_cert("kubernetes", "kubernetes.default.svc").configure_cert(SERVER_CONTEXT)
CLIENT_CA.configure_trust(SERVER_CONTEXT)
SERVER_CONTEXT.verify_mode = ssl.CERT_REQUIRED
EXPIRED = CLIENT_CA.issue_cert(
    "metrics-relay@test",
    not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
    not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
)


def client_context(cert: trustme.LeafCert | None = None, ca: trustme.CA = SERVER_CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


def refusal(not_after: datetime.datetime | None) -> Diagnosis | None:
    """Credentials.refusal_hint for a certificate valid until `not_after` (None: no certificate)."""
    facts = None
    if not_after is not None:
        facts = CertificateFacts(
            "CN=metrics-relay@test", datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC), not_after
        )
    credentials = Credentials(ssl.create_default_context(), facts, f"Bearer {SECRET_TOKEN}", "fingerprint")
    return credentials.refusal_hint(Path("/etc/metrics-relay/tls/tls.crt"))


FAR_FUTURE = datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC)
ATTEMPT = Attempt("10.0.0.10", 6443, ca_file="/etc/metrics-relay/tls/ca.crt", refusal=refusal(FAR_FUTURE))
EXPIRED_ATTEMPT = Attempt(
    "10.0.0.10", 6443, refusal=refusal(datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC))
)
NO_CERT_ATTEMPT = Attempt("10.0.0.10", 6443, refusal=refusal(None))
PLAIN_ATTEMPT = Attempt("10.0.0.10", 8080, tls=False)
KEY = ConnectionKey("10.0.0.10", 6443, True, ssl.create_default_context(), None, None, None)


def refused_socket_error() -> OSError:
    """The error of a real connect to a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError as exc:
        return exc
    raise AssertionError("something listens on a port just freed")


def read_after_handshake(error: ssl.SSLError) -> aiohttp.ClientOSError:
    """As aiohttp reports a TLS alert read after the handshake (TLS 1.3): a ClientOSError caused by it."""
    wrapped = aiohttp.ClientOSError(*error.args)
    wrapped.__cause__ = error
    return wrapped


def cut_body() -> aiohttp.ClientPayloadError:
    underlying = ContentLengthError("Not enough data to satisfy content length header.")
    error = aiohttp.ClientPayloadError(f"Response payload is not completed: {underlying!r}")
    error.__cause__ = underlying
    return error


EXPIRED_CAUSE = "the client certificate expired at 2021-01-01T00:00:00Z"
ROTATE = "openssl x509 -noout -startdate -enddate -in /etc/metrics-relay/tls/tls.crt"
NAMES = PresentedCertificate(
    "CN=kube-apiserver", "CN=kubernetes", ("kubernetes", "kubernetes.default.svc"), FAR_FUTURE
)

Row = tuple[Callable[[], BaseException], Attempt, str, str, str, str]
TRANSLATED: dict[str, Row] = {
    "refused": (
        lambda: aiohttp.ClientConnectorError(KEY, refused_socket_error()),
        ATTEMPT,
        "connect",
        "upstream refused the connection",
        "nothing listens on 10.0.0.10:6443",
        "port 6443 of the API server's internal SLB",
    ),
    "connect timed out": (
        lambda: aiohttp.ClientConnectorError(KEY, OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))),
        ATTEMPT,
        "connect",
        "connecting to the upstream timed out",
        "a firewall, security group or network policy drops the packets",
        "allow the relay's pod to reach 10.0.0.10:6443",
    ),
    "unreachable": (
        lambda: aiohttp.ClientConnectorError(
            KEY, OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))
        ),
        ATTEMPT,
        "connect",
        "upstream host unreachable",
        "no route to 10.0.0.10:6443",
        "check the host of url",
    ),
    "dns": (
        lambda: aiohttp.ClientConnectorDNSError(
            KEY, socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        ),
        ATTEMPT,
        "connect",
        "cannot resolve the upstream host 10.0.0.10",
        "DNS has no address for 10.0.0.10 (Name or service not known)",
        "name.namespace.svc",
    ),
    "reset in handshake": (
        lambda: aiohttp.ClientConnectorError(KEY, ConnectionResetError()),
        ATTEMPT,
        "connect",
        "upstream closed the connection during the TLS handshake",
        "10.0.0.10:6443 (or a load balancer or firewall on the way) dropped the connection",
        "openssl s_client -connect 10.0.0.10:6443",
    ),
    "reset in handshake, expired": (
        lambda: aiohttp.ClientConnectorError(KEY, ConnectionResetError()),
        EXPIRED_ATTEMPT,
        "tls",
        "upstream closed the connection during the TLS handshake",
        EXPIRED_CAUSE,
        ROTATE,
    ),
    "closed after handshake": (
        aiohttp.ServerDisconnectedError,
        ATTEMPT,
        "tls",
        "upstream closed the connection before answering",
        "TLS 1.3 servers close the connection so when they refuse the client certificate; the upstream may "
        "not trust the CA that signed the client certificate (CN=metrics-relay@test)",
        "check that the upstream trusts the CA that signed the client certificate (kube-apiserver: "
        "--client-ca-file)",
    ),
    "closed after handshake, no certificate": (
        aiohttp.ServerDisconnectedError,
        NO_CERT_ATTEMPT,
        "tls",
        "upstream closed the connection before answering",
        "no client certificate is configured (tls_config.cert_file and key_file)",
        "set tls_config.cert_file and key_file",
    ),
    "closed, plain http": (
        aiohttp.ServerDisconnectedError,
        PLAIN_ATTEMPT,
        "connect",
        "upstream closed the connection before answering",
        "10.0.0.10:8080 (or a proxy on the way) closed the connection",
        "the url starts with https://",
    ),
    "alert: certificate required": (
        lambda: read_after_handshake(handshake_error(client_context(), SERVER_CONTEXT)),
        NO_CERT_ATTEMPT,
        "tls",
        "upstream refused the client certificate (TLS alert: tlsv13 alert certificate required)",
        "no client certificate is configured",
        "set tls_config.cert_file and key_file",
    ),
    "alert: certificate expired": (
        lambda: read_after_handshake(handshake_error(client_context(EXPIRED), SERVER_CONTEXT)),
        EXPIRED_ATTEMPT,
        "tls",
        "upstream refused the client certificate (TLS alert: sslv3 alert certificate expired)",
        EXPIRED_CAUSE,
        ROTATE,
    ),
    "alert: unknown ca": (
        lambda: read_after_handshake(
            handshake_error(client_context(trustme.CA().issue_cert("x")), SERVER_CONTEXT)
        ),
        ATTEMPT,
        "tls",
        "upstream refused the client certificate (TLS alert: tlsv1 alert unknown ca)",
        "the upstream does not trust the CA that signed the client certificate",
        "check that the upstream trusts the CA that signed the client certificate",
    ),
    "alert in a TLS 1.2 handshake": (
        lambda: aiohttp.ClientConnectorSSLError(KEY, handshake_error(tls12_client(), SERVER_CONTEXT)),
        NO_CERT_ATTEMPT,
        "tls",
        "upstream refused the client certificate (TLS alert: sslv3 alert handshake failure)",
        "no client certificate is configured",
        "set tls_config.cert_file and key_file",
    ),
    "not TLS": (
        lambda: aiohttp.ClientConnectorSSLError(KEY, plain_http_answer()),
        ATTEMPT,
        "tls",
        "TLS handshake with upstream failed (wrong version number)",
        "10.0.0.10:6443 does not speak TLS (for plain HTTP, the url starts with http://)",
        "openssl s_client -connect 10.0.0.10:6443",
    ),
    "wrong name, certificate fetched": (
        lambda: aiohttp.ClientConnectorCertificateError(
            KEY, handshake_error(client_context(), SERVER_CONTEXT, "10.0.0.10")
        ),
        Attempt("10.0.0.10", 6443, presented=NAMES),
        "tls",
        "upstream certificate is not valid for 10.0.0.10",
        "the certificate 10.0.0.10:6443 presented names kubernetes, kubernetes.default.svc, not 10.0.0.10 "
        "(the host of url)",
        "set `tls_config.server_name: kubernetes` (a name the certificate carries)",
    ),
    "wrong server_name, certificate unknown": (
        lambda: aiohttp.ClientConnectorCertificateError(
            KEY, handshake_error(client_context(), SERVER_CONTEXT, "metrics.example")
        ),
        Attempt("10.0.0.10", 6443, server_name="metrics.example"),
        "tls",
        "upstream certificate is not valid for metrics.example",
        "does not name metrics.example (tls_config.server_name) among its alternative names",
        "there, `tls_config.server_name: kubernetes`",
    ),
    "CA does not sign the server": (
        lambda: aiohttp.ClientConnectorCertificateError(
            KEY, handshake_error(client_context(ca=trustme.CA()), SERVER_CONTEXT, "kubernetes")
        ),
        Attempt("10.0.0.10", 6443, ca_file="/etc/metrics-relay/tls/ca.crt", presented=NAMES),
        "tls",
        "upstream certificate not trusted: unable to get local issuer certificate",
        "the certificate 10.0.0.10:6443 presented was issued by CN=kubernetes, which tls_config.ca_file "
        "(/etc/metrics-relay/tls/ca.crt) does not vouch for",
        "set tls_config.ca_file to the CA that issued the upstream's certificate",
    ),
    "CA does not sign the server, system CAs": (
        lambda: aiohttp.ClientConnectorCertificateError(
            KEY, handshake_error(client_context(ca=trustme.CA()), SERVER_CONTEXT, "kubernetes")
        ),
        Attempt("10.0.0.10", 6443),
        "tls",
        "upstream certificate not trusted: unable to get local issuer certificate",
        "the system's CAs did not sign the upstream's certificate",
        "openssl s_client -connect 10.0.0.10:6443 -showcerts",
    ),
    "upstream certificate expired": (
        lambda: aiohttp.ClientConnectorCertificateError(
            KEY, handshake_error(client_context(), expired_server())
        ),
        Attempt(
            "10.0.0.10",
            6443,
            presented=replace(NAMES, not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC)),
        ),
        "tls",
        "upstream certificate not trusted: certificate has expired",
        "outside its validity period (it expired at 2021-01-01T00:00:00Z), or the clock of the relay's "
        "node is wrong",
        "have the upstream's certificate renewed",
    ),
    "body cut off": (
        cut_body,
        ATTEMPT,
        "body",
        "upstream body broke off before its end",
        "closed the connection before the body's announced end",
        "proxy's timeouts and size limits",
    ),
    "timeout": (
        TimeoutError,
        ATTEMPT,
        "deadline",
        "scrape deadline exceeded",
        "10.0.0.10:6443 did not answer in time",
        "raise the upstream's timeout",
    ),
    "a bug": (
        lambda: ValueError(f"boom {SECRET_TOKEN}"),
        ATTEMPT,
        "internal",
        "internal error of the relay (ValueError); see its log",
        "a bug in the relay",
        "report it",
    ),
}


def expired_server() -> ssl.SSLContext:
    """An upstream whose own certificate expired at 2021-01-01."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    expired = SERVER_CA.issue_cert(
        "kubernetes",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    expired.configure_cert(context)
    return context


def tls12_client() -> ssl.SSLContext:
    context = client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def plain_http_answer() -> ssl.SSLError:
    """What a TLS client reads from a plain HTTP server: its answer instead of a ServerHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context().wrap_bio(incoming, outgoing, server_hostname="kubernetes")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    incoming.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(ssl.SSLError) as caught:
        client.do_handshake()
    return caught.value


@pytest.mark.parametrize(
    ("make", "attempt", "expected"), [(m, a, e) for m, a, *e in TRANSLATED.values()], ids=TRANSLATED
)
def test_translated(make, attempt, expected):
    """An exception met while talking to the upstream becomes a ScrapeError that explains it."""
    reason, message, cause, action = expected
    error = translate_client_error(make(), attempt)
    assert (error.reason, error.message) == (reason, message)
    assert cause in error.cause
    assert action in error.action
    assert error.detail.startswith(f"upstream {attempt.address}: ")
    assert_presentable(error)


def test_detail_is_built_from_the_parts_not_the_repr():
    """aiohttp's text carries `ssl:<ssl.SSLContext object at 0x…>`: the detail has errno and OS text."""
    exc = aiohttp.ClientConnectorError(KEY, refused_socket_error())
    assert "object at 0x" in str(exc)
    detail = translate_client_error(exc, ATTEMPT).detail
    assert detail == (
        "upstream 10.0.0.10:6443: ClientConnectorError, caused by ConnectionRefusedError: ECONNREFUSED "
        "(Connection refused)"
    )


def test_detail_of_a_verification_failure_names_the_code():
    """A certificate check's detail: the verify message and OpenSSL's code, no `(_ssl.c:NNN)`."""
    exc = aiohttp.ClientConnectorCertificateError(
        KEY, handshake_error(client_context(ca=trustme.CA()), SERVER_CONTEXT, "kubernetes")
    )
    assert translate_client_error(exc, ATTEMPT).detail == (
        "upstream 10.0.0.10:6443: ClientConnectorCertificateError, caused by SSLCertVerificationError: "
        "unable to get local issuer certificate (code 20)"
    )


def test_a_scrape_error_passes_unchanged():
    """A ScrapeError already raised is not translated again."""
    error = limit_error("more samples than sample_limit (10)", setting="sample_limit", value="10")
    assert translate_client_error(error, ATTEMPT) is error


@given(code=st.sampled_from(sorted(errno.errorcode)))
def test_any_connect_errno_is_explained_cleanly(code):
    """Whatever errno a connect fails with, the explanation is complete and free of reprs."""
    error = translate_client_error(
        aiohttp.ClientConnectorError(KEY, OSError(code, os.strerror(code))), ATTEMPT
    )
    assert error.reason in ("connect", "tls")
    assert_presentable(error)


BUILT: dict[str, tuple[Callable[[], ScrapeError], str, str, str, str]] = {
    "401": (
        lambda: status_error(401, "Unauthorized", path="/metrics", attempt=ATTEMPT),
        "http_status",
        "upstream answered HTTP 401 Unauthorized",
        "did not recognise the relay's credentials",
        "bearer_token_file",
    ),
    "401 with an expired certificate": (
        lambda: status_error(401, "Unauthorized", path="/metrics", attempt=EXPIRED_ATTEMPT),
        "http_status",
        "upstream answered HTTP 401 Unauthorized",
        EXPIRED_CAUSE,
        ROTATE,
    ),
    "403": (
        lambda: status_error(403, "Forbidden", path="/metrics", attempt=ATTEMPT, body_start="forbidden"),
        "http_status",
        "upstream answered HTTP 403 Forbidden",
        "may not read /metrics",
        'nonResourceURLs: ["/metrics"]',
    ),
    "404": (
        lambda: status_error(404, "Not Found", path="/metrics", attempt=ATTEMPT),
        "http_status",
        "upstream answered HTTP 404 Not Found",
        "the upstream has nothing at /metrics",
        'params: {hosting: ["true"]} (?hosting=true)',
    ),
    "302": (
        lambda: status_error(
            302, "Found", path="/metrics", attempt=ATTEMPT, location="https://sso.example/login"
        ),
        "http_status",
        "upstream answered HTTP 302 Found",
        "redirects to https://sso.example/login",
        "the relay does not follow redirects",
    ),
    "500": (
        lambda: status_error(500, "Internal Server Error", path="/metrics", attempt=ATTEMPT),
        "http_status",
        "upstream answered HTTP 500 Internal Server Error",
        "failed to produce its metrics",
        "look at the upstream's log",
    ),
    "no Content-Type": (
        lambda: content_type_error("", "text/plain;version=0.0.4", address="10.0.0.10:6443"),
        "content_type",
        "upstream Content-Type is 'missing', expected 'text/plain;version=0.0.4'",
        "sent no Content-Type",
        "point url at the Prometheus metrics endpoint",
    ),
    "limit": (
        lambda: limit_error("more samples than sample_limit (10)", setting="sample_limit", value="10"),
        "limit",
        "more samples than sample_limit (10)",
        "sample_limit is 10 for this upstream",
        "raise sample_limit in the upstream's configuration (0 means no limit)",
    ),
    "deadline set by the scraper": (
        lambda: deadline_error(9.5, configured=30, scraper_timeout=10),
        "deadline",
        "scrape deadline of 9.5s exceeded",
        "the scraper allows 10s (X-Prometheus-Scrape-Timeout-Seconds",
        "raise scrape_timeout in the scraper's job",
    ),
    "deadline set by timeout": (
        lambda: deadline_error(10, configured=10, scraper_timeout=15),
        "deadline",
        "scrape deadline of 10s exceeded",
        "the upstream took longer than this upstream's timeout of 10s",
        "raise the upstream's timeout",
    ),
    "expired certificate refused on rotation": (
        lambda: ClientTLSMaterialError("tls_config.cert_file", EXPIRED_CAUSE),
        "client_tls",
        f"client credentials unusable: tls_config.cert_file: {EXPIRED_CAUSE}",
        "no usable set of credentials has been loaded for this upstream",
        "openssl x509 -noout -startdate -enddate -in tls_config.cert_file",
    ),
    "unreadable key": (
        lambda: ClientTLSMaterialError(
            "tls_config.key_file", "cannot read /tls/tls.key: No such file or directory"
        ),
        "client_tls",
        "client credentials unusable: tls_config.key_file: cannot read /tls/tls.key: "
        "No such file or directory",
        "no usable set of credentials",
        "mount the unencrypted PEM key of tls_config.cert_file",
    ),
    "token with a line break": (
        lambda: ClientTLSMaterialError(
            "bearer_token_file", "the token holds a line break or control character"
        ),
        "client_tls",
        "client credentials unusable: bearer_token_file: the token holds a line break or control character",
        "no usable set of credentials",
        "write the token alone, on one line",
    ),
}


@pytest.mark.parametrize(("make", "expected"), [(m, e) for m, *e in BUILT.values()], ids=BUILT)
def test_built(make, expected):
    """Failures the relay finds itself (status, Content-Type, limits, deadline, files) explain themselves."""
    reason, message, cause, action = expected
    error = make()
    assert (error.reason, error.message) == (reason, message)
    assert cause in error.cause
    assert action in error.action
    assert_presentable(error)


@pytest.mark.parametrize("kind", [kind for kind in SCRAPE_ERRORS if kind is not ClientTLSMaterialError])
def test_every_kind_explains_itself_even_from_a_bare_message(kind):
    """A failure raised with a message only (as engines and server may) still has a cause and an action."""
    error = kind(f"{kind.reason} failed")
    assert_presentable(error)
    assert error.explanation().startswith(f"{kind.reason} failed\nlikely cause: ")


def test_explanation_and_log_fields_say_the_same():
    """The 502 body/landing page text and the log line carry the same message, cause and action."""
    error = translate_client_error(aiohttp.ServerDisconnectedError(), EXPIRED_ATTEMPT)
    fields = error.log_fields()
    assert error.explanation() == (
        f"{fields['error']}\nlikely cause: {fields['cause']}\nwhat to do: {fields['action']}"
    )
    assert fields["detail"] == "upstream 10.0.0.10:6443: ServerDisconnectedError"


@pytest.mark.parametrize(
    ("not_after", "certain", "cause"),
    [
        (None, True, "no client certificate is configured"),
        (datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC), True, EXPIRED_CAUSE),
        (FAR_FUTURE, False, "the upstream may not trust the CA that signed the client certificate"),
    ],
)
def test_refusal_hint(not_after, certain, cause):
    """What the relay knows of its certificate: missing and expired are certain, a valid one only a guess."""
    hint = refusal(not_after)
    assert hint is not None
    assert hint.certain is certain
    assert cause in hint.cause


def test_refusal_hint_of_a_certificate_not_yet_valid():
    """A certificate whose validity starts later: the clock, and the command to see its dates."""
    facts = CertificateFacts("CN=x", FAR_FUTURE, FAR_FUTURE + datetime.timedelta(days=1))
    hint = Credentials(ssl.create_default_context(), facts, None, "f").refusal_hint(Path("/tls/tls.crt"))
    assert hint is not None
    assert hint.cause == "the client certificate is not valid before 2099-01-01T00:00:00Z"
    assert "check the clock of the relay's node" in hint.action
    assert "-in /tls/tls.crt" in hint.action


def test_plain_http_has_no_refusal_hint():
    """Without TLS there is no certificate to be refused."""
    assert Credentials(None, None, None, "f").refusal_hint() is None


def test_presented_certificate_from_der():
    """The names, issuer and expiry of a real certificate, read without trusting it."""
    ca = trustme.CA()
    leaf = ca.issue_cert("kubernetes", "10.0.0.10")
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    presented = PresentedCertificate.from_der(der)
    assert presented.names == ("kubernetes", "10.0.0.10")
    assert "O=trustme" in presented.issuer
    with pytest.raises(ValueError, match="asn1"):
        PresentedCertificate.from_der(b"not a certificate")
