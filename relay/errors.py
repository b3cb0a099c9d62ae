"""The relay's exception tree, and the one place where aiohttp, ssl and OS errors become it.

    RelayError
    ├── ConfigError                  the configuration cannot be used; carries every located problem
    └── ScrapeError                  one scrape of one upstream failed; `reason` is a stable short slug
        ├── ClientTLSMaterialError   client_tls    our own CA/cert/key/token files are unusable
        ├── UpstreamConnectError     connect       DNS, refused, reset before an answer
        ├── UpstreamTLSError         tls           handshake failed, or the upstream refused our certificate
        ├── UpstreamStatusError      http_status   the upstream answered something other than 200
        ├── UpstreamContentTypeError content_type  the upstream's body is not the text exposition format
        ├── UpstreamBodyError        body          the body broke off before its announced end
        ├── InvalidExpositionError   parse         the body is not valid text format or OpenMetrics
        ├── LimitExceededError       limit         a configured limit (body_size_limit, ...) was passed
        ├── DeadlineExceededError    deadline      the scrape's deadline passed (HTTP 504, all others 502)
        ├── ScraperGoneError         scraper_gone  the scraper disconnected or gave up first (counted only)
        └── RelayInternalError       internal      a bug in the relay: logged with its traceback

A ScrapeError's `message` is short, safe to show to a scraper and free of secrets; `detail` goes to the log.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import aiohttp


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration: where (`upstreams[0].timeout`, a line if known) and what."""

    path: str
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        """`file:line: path: message`, the shape compilers and promtool use."""
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(RelayError):
    """The configuration is unusable; `problems` holds every problem found, each with its location."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(problem.render(source) for problem in self.problems))


class ScrapeError(RelayError):
    """One scrape of one upstream failed before or while its body was relayed."""

    reason: ClassVar[str] = "unknown"
    status: ClassVar[int] = 502

    def __init__(self, message: str, detail: str = "", *, cause: str = "", action: str = "") -> None:
        self.message = message
        self.detail = detail or message
        self.cause = cause
        self.action = action
        super().__init__(message)

    def explanation(self) -> str:
        """What happened, the likely cause and what to do, for people: the 502 body and the landing page."""
        lines = [self.message]
        if self.cause:
            lines.append(f"likely cause: {self.cause}")
        if self.action:
            lines.append(f"what to do: {self.action}")
        return "\n".join(lines)

    def log_fields(self) -> dict[str, str]:
        """The same explanation as structured log fields (`error`, `cause`, `action`, `detail`)."""
        fields = {"error": self.message}
        if self.cause:
            fields["cause"] = self.cause
        if self.action:
            fields["action"] = self.action
        if self.detail != self.message:
            fields["detail"] = self.detail
        return fields


class ClientTLSMaterialError(ScrapeError):
    """Our own TLS files (CA, certificate, key) or bearer token file cannot be used."""

    reason = "client_tls"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"client credentials unusable: {field}: {problem}")
        self.field = field
        self.problem = problem


class UpstreamConnectError(ScrapeError):
    """No answer could be had from the upstream: DNS, refused, reset, closed."""

    reason = "connect"


class UpstreamTLSError(ScrapeError):
    """The TLS handshake failed, or the upstream refused the client certificate."""

    reason = "tls"


class UpstreamStatusError(ScrapeError):
    """The upstream answered with a status other than 200."""

    reason = "http_status"


class UpstreamContentTypeError(ScrapeError):
    """The upstream's Content-Type is not one the relay can relay."""

    reason = "content_type"


class UpstreamBodyError(ScrapeError):
    """The upstream body ended before its announced end or broke off."""

    reason = "body"


class InvalidExpositionError(ScrapeError):
    """The upstream body is not valid text format or OpenMetrics (Prometheus would fail the scrape too)."""

    reason = "parse"


class LimitExceededError(ScrapeError):
    """A configured limit was passed (body_size_limit, sample_limit, ...)."""

    reason = "limit"


class DeadlineExceededError(ScrapeError):
    """The scrape's deadline passed."""

    reason = "deadline"
    status = 504


class ScraperGoneError(ScrapeError):
    """The scraper went away before its body was complete; recorded, never sent."""

    reason = "scraper_gone"


class RelayInternalError(ScrapeError):
    """Something the relay did not expect: a bug, logged with its traceback."""

    reason = "internal"


SCRAPE_ERRORS: tuple[type[ScrapeError], ...] = (
    ClientTLSMaterialError,
    UpstreamConnectError,
    UpstreamTLSError,
    UpstreamStatusError,
    UpstreamContentTypeError,
    UpstreamBodyError,
    InvalidExpositionError,
    LimitExceededError,
    DeadlineExceededError,
    ScraperGoneError,
    RelayInternalError,
)
"""Every concrete scrape failure, so that metrics can initialise one series per reason up front."""

_SERVER_NAME_HINT = "set tls_config.server_name to a name in the upstream certificate's SANs"


def translate_client_error(  # noqa: PLR0911 - one return per kind of failure reads as a table
    exc: BaseException, *, refusal_hint: str = ""
) -> ScrapeError:
    """Turn an exception raised while talking to the upstream into the ScrapeError that names its cause.

    Anything unexpected becomes a RelayInternalError (and is logged with its traceback by the caller).

    `refusal_hint` says why the upstream might refuse the relay's certificate (say, that it expired); it is
    given for TLS upstreams only, and added where a refused certificate often shows as a bare reset.
    """
    if isinstance(exc, ScrapeError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return DeadlineExceededError("scrape deadline exceeded")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _certificate_error(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientSSLError):
        return _tls_error(exc, refusal_hint)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return UpstreamConnectError("cannot resolve upstream host", str(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connect_error(exc)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamBodyError("upstream body broke off before its end", str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return _disconnect_error(exc, refusal_hint)
    if isinstance(exc, ssl.SSLError):
        return _tls_error(exc, refusal_hint)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamConnectError(f"upstream request failed: {type(exc).__name__}", str(exc))
    return RelayInternalError(f"internal error of the relay ({type(exc).__name__}); see its log", repr(exc))


def _certificate_error(error: BaseException) -> UpstreamTLSError:
    """The upstream's certificate failed verification: say why, and how to fix a name mismatch."""
    detail = str(error)
    if isinstance(error, ssl.SSLCertVerificationError):
        text = error.verify_message or detail
        if "mismatch" in text.lower():
            return UpstreamTLSError(
                f"upstream certificate does not match the host name: {text}; {_SERVER_NAME_HINT}", detail
            )
        return UpstreamTLSError(
            f"upstream certificate not trusted: {text} (check tls_config.ca_file)", detail
        )
    return UpstreamTLSError("upstream certificate verification failed", detail)


def _tls_error(exc: BaseException, refusal_hint: str) -> UpstreamTLSError:
    """A TLS failure other than verifying the upstream: mostly the upstream refusing our certificate."""
    error = getattr(exc, "os_error", exc)
    reason = getattr(error, "reason", None) or type(error).__name__
    text = str(reason).lower()
    refused_words = ("certificate", "unknown_ca", "unknown ca", "alert")
    if any(word in text for word in refused_words):
        message = f"upstream refused the client certificate ({reason})"
    else:
        message = f"TLS handshake with upstream failed ({reason})"
    return UpstreamTLSError(_with_hint(message, refusal_hint), str(exc))


def _connect_error(exc: aiohttp.ClientConnectorError) -> UpstreamConnectError:
    """The TCP connection could not be made."""
    if exc.os_error.errno == errno.ECONNREFUSED:
        return UpstreamConnectError("upstream refused the connection", str(exc))
    return UpstreamConnectError(
        f"cannot connect to upstream ({exc.os_error.strerror or exc.os_error})", str(exc)
    )


def _disconnect_error(exc: BaseException, refusal_hint: str) -> ScrapeError:
    """The upstream closed or reset the connection before answering.

    With TLS 1.3 a server that rejects the client certificate does so after the client's handshake ends,
    and the client often sees nothing but a reset: so a reset is reported with what we know of our
    certificate.
    """
    message = "upstream closed the connection before answering"
    if refusal_hint:
        message += ", as TLS servers do when they refuse the client certificate"
        return UpstreamTLSError(_with_hint(message, refusal_hint), str(exc))
    return UpstreamConnectError(message, str(exc))


def _with_hint(message: str, hint: str) -> str:
    return f"{message}: {hint}" if hint else message
