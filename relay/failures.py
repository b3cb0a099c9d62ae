"""The one place where aiohttp, ssl and OS errors of an upstream request become explained ScrapeErrors.

What a failed request tried (`Attempt`: address, TLS settings, what the relay knows of its own certificate,
the certificate the upstream presented), the translation of the exception raised, and the builders for
failures found in an answer (status, Content-Type, limits, deadline).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from cryptography import x509

from relay.errors import (
    DeadlineExceededError,
    LimitExceededError,
    RelayInternalError,
    ScrapeError,
    UpstreamBodyError,
    UpstreamConnectError,
    UpstreamContentTypeError,
    UpstreamStatusError,
    UpstreamTLSError,
)

# --- what the relay knows when a request fails -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A likely cause and what to do about it, for a failure whose own report names neither."""

    cause: str
    action: str
    certain: bool = False
    """True when the relay found the problem itself (say, its client certificate expired)."""


@dataclass(frozen=True, slots=True)
class PresentedCertificate:
    """What the upstream's certificate says of itself, read without trusting it, to explain a failed check."""

    subject: str
    issuer: str
    names: tuple[str, ...]
    """The DNS names and IP addresses of its subject alternative names, in order."""
    not_after: datetime

    @classmethod
    def from_der(cls, der: bytes) -> PresentedCertificate:
        """Read a DER certificate; ValueError if it is not one."""
        certificate = x509.load_der_x509_certificate(der)
        try:
            alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            names: tuple[str, ...] = ()
        else:
            names = tuple(alternative.get_values_for_type(x509.DNSName)) + tuple(
                str(address) for address in alternative.get_values_for_type(x509.IPAddress)
            )
        return cls(
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            names=names,
            not_after=certificate.not_valid_after_utc,
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the relay tried when a request failed: where, over what, trusting what, as whom."""

    host: str
    port: int
    tls: bool = True
    ca_file: str = ""
    """tls_config.ca_file as in use; '' when the system's CAs vouch for the upstream."""
    server_name: str = ""
    """tls_config.server_name; '' when the certificate is checked against the URL's host."""
    refusal: Diagnosis | None = None
    """Why the upstream might refuse the client certificate (None over plain HTTP)."""
    presented: PresentedCertificate | None = None
    """The upstream's certificate, when it failed verification and could be fetched to say why."""

    @property
    def address(self) -> str:
        """host:port, brackets around an IPv6 address."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def checked_name(self) -> str:
        """The name the upstream's certificate must carry."""
        return self.server_name or self.host


def translate_client_error(  # noqa: PLR0911 - one return per kind of failure reads as a table
    exc: BaseException, attempt: Attempt
) -> ScrapeError:
    """Turn an exception raised while talking to the upstream into the ScrapeError that explains it.

    Anything unexpected becomes a RelayInternalError (and is logged with its traceback by the caller).
    """
    if isinstance(exc, ScrapeError):
        return exc
    detail = technical_detail(exc, attempt.address)
    if isinstance(exc, TimeoutError):
        return DeadlineExceededError(
            "scrape deadline exceeded",
            detail,
            cause=f"{attempt.address} did not answer in time",
            action="raise the upstream's timeout, or make it answer faster",
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _certificate_error(exc.certificate_error, attempt, detail)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return _dns_error(exc.os_error, attempt, detail)
    if isinstance(exc, aiohttp.ClientSSLError):
        return _handshake_error(exc.os_error, attempt, detail)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connect_error(exc.os_error, attempt, detail)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamBodyError(
            "upstream body broke off before its end",
            detail,
            cause=f"{attempt.address} (or a proxy on the way) closed the connection before the body's "
            "announced end",
            action="look at the upstream's log and at any proxy's timeouts and size limits on the way",
        )
    ssl_error = _ssl_cause(exc)
    if ssl_error is not None:
        return _handshake_error(ssl_error, attempt, detail)
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError) or (
        isinstance(exc, aiohttp.ClientOSError) and exc.errno in _RESET_ERRNOS
    ):
        return _closed_error(attempt, detail)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamConnectError(
            f"request to the upstream failed ({type(exc).__name__})",
            detail,
            cause=f"the connection to {attempt.address} failed while the request was under way",
            action="look at the upstream's log; the next scrape tries again",
        )
    return RelayInternalError(f"internal error of the relay ({type(exc).__name__}); see its log", detail)


_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE})
_ACK_SERVER_NAME = (
    "the ACK metrics aggregator's certificate names `kubernetes`, not the SLB's IP: "
    "there, `tls_config.server_name: kubernetes`"
)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The SSLError behind an exception (aiohttp re-raises an alert after the handshake as an OSError)."""
    for error in _chain(exc):
        if isinstance(error, ssl.SSLError) and not isinstance(error, aiohttp.ClientError):
            return error
    return None


def _certificate_error(error: BaseException, attempt: Attempt, detail: str) -> UpstreamTLSError:
    """The upstream's certificate failed verification: say why, with what it presented when known."""
    code = getattr(error, "verify_code", None)
    text = _sentence(getattr(error, "verify_message", None) or getattr(error, "reason", None) or "")
    presented = attempt.presented
    at = f"the certificate {attempt.address} presented"
    if code in (_X509_HOSTNAME_MISMATCH, _X509_IP_ADDRESS_MISMATCH):
        name = attempt.checked_name
        checked = "tls_config.server_name" if attempt.server_name else "the host of url"
        if presented is not None and presented.names:
            cause = f"{at} names {', '.join(presented.names)}, not {name} ({checked})"
            choice = "kubernetes" if "kubernetes" in presented.names else presented.names[0]
            action = f"set `tls_config.server_name: {choice}` (a name the certificate carries)"
        else:
            cause = f"the upstream's certificate does not name {name} ({checked}) among its alternative names"
            action = f"set tls_config.server_name to a name the certificate carries; {_ACK_SERVER_NAME}"
        return UpstreamTLSError(
            f"upstream certificate is not valid for {name}", detail, cause=cause, action=action
        )
    if code in (_X509_CERT_HAS_EXPIRED, _X509_CERT_NOT_YET_VALID):
        when = ""
        if code == _X509_CERT_HAS_EXPIRED and presented is not None:
            when = f" (it expired at {_timestamp(presented.not_after)})"
        return UpstreamTLSError(
            f"upstream certificate not trusted: {text}",
            detail,
            cause=f"the upstream's certificate is outside its validity period{when}, "
            "or the clock of the relay's node is wrong",
            action="have the upstream's certificate renewed, or correct the node's clock",
        )
    trusted = f"tls_config.ca_file ({attempt.ca_file})" if attempt.ca_file else "the system's CAs"
    if presented is not None:
        cause = f"{at} was issued by {presented.issuer}, which {trusted} does not vouch for"
    else:
        cause = f"{trusted} did not sign the upstream's certificate"
    return UpstreamTLSError(
        f"upstream certificate not trusted: {text}",
        detail,
        cause=cause,
        action="set tls_config.ca_file to the CA that issued the upstream's certificate (for a cluster: "
        "the CA of its kubeconfig, ca.crt of the Secret); see the chain with "
        f"`openssl s_client -connect {attempt.address} -showcerts`",
    )


# OpenSSL's X509_V_ERR_* codes of the failures explained apart.
_X509_CERT_NOT_YET_VALID = 9
_X509_CERT_HAS_EXPIRED = 10
_X509_HOSTNAME_MISMATCH = 62
_X509_IP_ADDRESS_MISMATCH = 64

_REFUSAL_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the upstream requires a client certificate and got none",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the upstream says the client certificate expired (by its clock)",
    "TLSV1_ALERT_UNKNOWN_CA": "the upstream does not trust the CA that signed the client certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the upstream says the client certificate was revoked",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "",
    "TLSV1_ALERT_ACCESS_DENIED": "",
    "TLSV1_ALERT_DECRYPT_ERROR": "",
}
"""TLS alerts by which a server refuses a client certificate, with what each says beyond the refusal."""

_NOT_TLS = "{address} does not speak TLS (for plain HTTP, the url starts with http://)"
_NO_COMMON_VERSION = "the relay and {address} share no TLS version (see tls_config.min_version)"
_HANDSHAKE_CAUSES = {
    "WRONG_VERSION_NUMBER": _NOT_TLS,
    "RECORD_LAYER_FAILURE": _NOT_TLS,
    "TLSV1_ALERT_PROTOCOL_VERSION": _NO_COMMON_VERSION,
    "UNSUPPORTED_PROTOCOL": _NO_COMMON_VERSION,
    "NO_PROTOCOLS_AVAILABLE": _NO_COMMON_VERSION,
}


def _handshake_error(error: BaseException, attempt: Attempt, detail: str) -> ScrapeError:
    """A TLS failure other than verifying the upstream: mostly the upstream refusing our certificate."""
    reason = str(getattr(error, "reason", None) or type(error).__name__)
    words = reason.lower().replace("_", " ")
    if reason in _REFUSAL_ALERTS:
        refusal = attempt.refusal
        said = _REFUSAL_ALERTS[reason]
        if refusal is not None and (refusal.certain or not said):
            cause = refusal.cause
        else:
            cause = said or "the upstream did not accept the client certificate"
        return UpstreamTLSError(
            f"upstream refused the client certificate (TLS alert: {words})",
            detail,
            cause=cause,
            action=refusal.action if refusal is not None else _TRUSTED_CLIENT_CA,
        )
    if isinstance(error, ConnectionResetError):
        return _reset_in_handshake(attempt, detail)
    cause = _HANDSHAKE_CAUSES.get(reason, "the TLS handshake with {address} failed: " + words)
    return UpstreamTLSError(
        f"TLS handshake with upstream failed ({words})",
        detail,
        cause=cause.format(address=attempt.address),
        action=f"compare with `openssl s_client -connect {attempt.address}` from the relay's node",
    )


_TRUSTED_CLIENT_CA = "check that the upstream trusts the CA that signed the client certificate"


def _dns_error(error: OSError, attempt: Attempt, detail: str) -> UpstreamConnectError:
    return UpstreamConnectError(
        f"cannot resolve the upstream host {attempt.host}",
        detail,
        cause=f"DNS has no address for {attempt.host} ({_sentence(error.strerror or 'no answer')})",
        action="check the host of url; for a Service in another namespace use name.namespace.svc; "
        "the ACK metrics aggregator is reached at the IP of the API server's internal SLB",
    )


_UNREACHABLE = {
    errno.ECONNREFUSED: (
        "upstream refused the connection",
        "nothing listens on {address}, or a firewall rejects the connection",
        "check the host and port of url (the ACK metrics aggregator: port 6443 of the API server's "
        "internal SLB) and that the upstream runs",
    ),
    errno.ETIMEDOUT: (
        "connecting to the upstream timed out",
        "no answer from {address}: a firewall, security group or network policy drops the packets",
        "allow the relay's pod to reach {address} (security group, NetworkPolicy)",
    ),
    errno.EHOSTUNREACH: (
        "upstream host unreachable",
        "there is no route to {address}",
        "check the host of url and the network between the relay's pod and it",
    ),
    errno.ENETUNREACH: (
        "upstream network unreachable",
        "there is no route to {address}",
        "check the host of url and the network between the relay's pod and it",
    ),
}


def _connect_error(error: OSError, attempt: Attempt, detail: str) -> ScrapeError:
    """The TCP connection (or the TLS handshake on it) could not be made."""
    if isinstance(error, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return _reset_in_handshake(attempt, detail) if attempt.tls else _closed_error(attempt, detail)
    if error.errno in _UNREACHABLE:
        message, cause, action = _UNREACHABLE[error.errno]
        return UpstreamConnectError(
            message,
            detail,
            cause=cause.format(address=attempt.address),
            action=action.format(address=attempt.address),
        )
    return UpstreamConnectError(
        f"cannot connect to the upstream at {attempt.address}",
        detail,
        cause=_sentence(os.strerror(error.errno) if error.errno else type(error).__name__),
        action="check the host and port of url and the network between the relay's pod and it",
    )


def _reset_in_handshake(attempt: Attempt, detail: str) -> ScrapeError:
    """Closed in the TLS handshake: a refusal when our certificate is known to be bad, else the network."""
    refusal = attempt.refusal
    if refusal is not None and refusal.certain:
        return UpstreamTLSError(
            "upstream closed the connection during the TLS handshake",
            detail,
            cause=_refused(refusal, "servers"),
            action=refusal.action,
        )
    return UpstreamConnectError(
        "upstream closed the connection during the TLS handshake",
        detail,
        cause=f"{attempt.address} (or a load balancer or firewall on the way) dropped the connection; "
        "a server that refuses the client certificate may do so too",
        action=f"compare with `openssl s_client -connect {attempt.address}` from the relay's node; "
        + (refusal.action if refusal is not None else _TRUSTED_CLIENT_CA),
    )


def _refused(refusal: Diagnosis, who: str) -> str:
    return f"{who} close the connection so when they refuse the client certificate; {refusal.cause}"


def _closed_error(attempt: Attempt, detail: str) -> ScrapeError:
    """The upstream closed the connection after connecting, before answering.

    With TLS 1.3 a server that rejects the client certificate does so after the client's handshake ends,
    and the client often sees nothing but a closed connection: so it is explained with what the relay
    knows of its certificate.
    """
    refusal = attempt.refusal
    message = "upstream closed the connection before answering"
    if attempt.tls and refusal is not None:
        return UpstreamTLSError(
            message, detail, cause=_refused(refusal, "TLS 1.3 servers"), action=refusal.action
        )
    return UpstreamConnectError(
        message,
        detail,
        cause=f"{attempt.address} (or a proxy on the way) closed the connection",
        action="look at the upstream's log; if it speaks TLS, the url starts with https://",
    )


# --- failures the relay finds in an answer ----------------------------------------------------------

_STATUS_EXPLANATIONS = {
    400: (
        "the upstream could not use the request; nginx answers 400 to a missing or invalid client "
        "certificate",
        "check the client certificate and that the url is the upstream's metrics endpoint",
    ),
    401: (
        "the upstream did not recognise the relay's credentials: the client certificate is not signed by "
        "a CA it trusts for clients, or the bearer token is invalid",
        "use a client certificate signed by the upstream's client CA (kube-apiserver: --client-ca-file), "
        "or a valid token in bearer_token_file",
    ),
    403: (
        "the upstream knows who the relay is, but that identity may not read {path}",
        "grant the certificate's user (its CN, for Kubernetes) or the token's account get on "
        'nonResourceURLs: ["{path}"] (a ClusterRole and its binding)',
    ),
    404: (
        "the upstream has nothing at {path}",
        "check the path of url and its params; the ACK metrics aggregator answers only with "
        'params: {{hosting: ["true"]}} (?hosting=true)',
    ),
}


def status_error(
    status: int,
    phrase: str,
    *,
    path: str,
    attempt: Attempt,
    body_start: str = "",
    location: str = "",
) -> UpstreamStatusError:
    """The upstream answered `status` instead of 200; `path` is the URL's path with its query."""
    message = f"upstream answered HTTP {status} {phrase}".rstrip()
    refusal = attempt.refusal
    if status in _STATUS_EXPLANATIONS:
        cause, action = (text.format(path=path) for text in _STATUS_EXPLANATIONS[status])
        if status in (400, 401, 403) and refusal is not None and refusal.certain:
            cause, action = refusal.cause, refusal.action
    elif 300 <= status < 400:
        cause = f"the upstream redirects to {location or 'a location it does not name'}"
        action = "set url to where it redirects: the relay does not follow redirects"
    elif status >= 500:
        cause = "the upstream failed to produce its metrics (503: it is starting or overloaded)"
        action = "look at the upstream's log; the next scrape tries again"
    else:
        cause = f"the upstream does not serve metrics at {path}"
        action = "check the url"
    detail = f"upstream {attempt.address}"
    if body_start:
        detail += f", its body starts {body_start!r}"
    return UpstreamStatusError(message, detail, cause=cause, action=action)


def connect_timeout_error(attempt: Attempt, seconds: float) -> UpstreamConnectError:
    """Connecting to one of several addresses took longer than its share of the deadline."""
    return UpstreamConnectError(
        f"connecting to {attempt.address} took longer than {seconds:g}s",
        cause=f"nothing answers at {attempt.address}: the host is down, or a firewall or NetworkPolicy drops "
        "the connection without refusing it",
        action="check that the address is right and reachable from the relay's pod",
    )


def content_type_error(content_type: str, expected: str, *, address: str) -> UpstreamContentTypeError:
    """The upstream's answer is not in a format the relay asked for."""
    media_type = content_type.partition(";")[0].strip().lower()
    if not media_type:
        cause = "the upstream sent no Content-Type"
    elif media_type == "text/html":
        cause = "the url answers with a web page (a login or proxy error page), not metrics"
    elif media_type.endswith("json"):
        cause = "the url answers with an API response, not metrics"
    else:
        cause = "the upstream answers in a format the relay does not relay"
    return UpstreamContentTypeError(
        f"upstream Content-Type is {content_type or 'missing'!r}, expected {expected!r}",
        f"upstream {address}",
        cause=cause,
        action="point url at the Prometheus metrics endpoint; "
        "`curl --cacert ca.crt --cert tls.crt --key tls.key URL` shows what it answers",
    )


def limit_error(message: str, *, setting: str, value: str) -> LimitExceededError:
    """A configured limit was passed: which one, its value, and how to raise it."""
    return LimitExceededError(
        message,
        cause=f"{setting} is {value} for this upstream, and its body goes past it",
        action=f"raise {setting} in the upstream's configuration (0 means no limit) if the body is "
        "rightly that large, or have the upstream send less",
    )


def deadline_error(
    deadline: float, *, configured: float, scraper_timeout: float | None = None
) -> DeadlineExceededError:
    """The scrape's deadline of `deadline` seconds passed: say whether the scraper or `timeout` set it."""
    message = f"scrape deadline of {deadline:g}s exceeded"
    if scraper_timeout is not None and deadline < configured:
        return DeadlineExceededError(
            message,
            cause=f"the scraper allows {scraper_timeout:g}s (X-Prometheus-Scrape-Timeout-Seconds, less a "
            f"margin for the way back), less than this upstream's timeout of {configured:g}s, and the "
            "upstream took longer",
            action="raise scrape_timeout in the scraper's job (it bounds the relay's deadline), or make "
            "the upstream answer faster (params that select less, a smaller body)",
        )
    return DeadlineExceededError(
        message,
        cause=f"the upstream took longer than this upstream's timeout of {configured:g}s",
        action="raise the upstream's timeout (and the scraper's scrape_timeout with it), or make the "
        "upstream answer faster",
    )


# --- technical detail, for the log ------------------------------------------------------------------


def technical_detail(exc: BaseException, address: str) -> str:
    """The exception's meaningful parts (type, errno, OS text, TLS library and reason), never its repr.

    aiohttp's own texts carry reprs (`ssl:<ssl.SSLContext object at 0x…>`, `ConnectionKey(…)`): only the
    wrapped errors' attributes are used.
    """
    parts = [_describe(error) for error in _chain(exc)]
    return f"upstream {address}: " + ", caused by ".join(dict.fromkeys(parts))


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what aiohttp wraps in it and what caused it, each once."""
    chain: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending and len(chain) < 6:
        error = pending.pop(0)
        if error is None or any(error is seen for seen in chain):
            continue
        chain.append(error)
        pending += [getattr(error, "os_error", None), error.__cause__]
    return chain


def _describe(error: BaseException) -> str:  # noqa: PLR0911 - one return per kind of error, as a table
    name = type(error).__name__
    if isinstance(error, aiohttp.ClientError):
        return name  # its text holds reprs; what it wraps is described next
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"{name}: {_sentence(error.verify_message or error.reason or '')} (code {error.verify_code})"
    if isinstance(error, ssl.SSLError):
        return f"{name}: {error.library or 'SSL'} {error.reason or 'error'}"
    if isinstance(error, socket.gaierror):
        return f"{name}: {_sentence(error.strerror or '')}"
    if isinstance(error, OSError) and error.errno:
        return f"{name}: {errno.errorcode.get(error.errno, str(error.errno))} ({os.strerror(error.errno)})"
    message = getattr(error, "message", None)  # aiohttp's HTTP parser errors
    if isinstance(message, str) and message:
        return f"{name}: {_sentence(message)}"
    return name


def _sentence(text: str) -> str:
    """Library text ready to be placed inside ours: one line, no closing full stop."""
    return " ".join(text.split()).rstrip(".")


def _timestamp(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"
