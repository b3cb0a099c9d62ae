"""The relay's exception tree: what went wrong, with what most likely caused it and what to do.

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
        ├── ShutdownError            shutdown      the relay stopped before the body was complete
        └── RelayInternalError       internal      a bug in the relay: logged with its traceback

A ScrapeError's `message` is short, safe to show to a scraper and free of secrets; `cause` and `action` say
why it most likely happened and what to do (all three go to the 502 body, the landing page and the log);
`detail` goes to the log only, built from the exception's parts, never from a library's repr
(failures.py turns aiohttp, ssl and OS errors into these, in one place).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


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
    # The cause and advice of this kind of failure where whoever raises it knows no better one.
    usual_cause: ClassVar[str] = ""
    usual_action: ClassVar[str] = ""

    def __init__(self, message: str, detail: str = "", *, cause: str = "", action: str = "") -> None:
        self.message = message
        self.detail = detail or message
        self.cause = cause or self.usual_cause
        self.action = action or self.usual_action
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
        super().__init__(
            f"client credentials unusable: {field}: {problem}",
            cause="no usable set of credentials has been loaded for this upstream "
            "(once one has, it stays in use while newer files are broken)",
            action=_material_action(field, problem),
        )
        self.field = field
        self.problem = problem


_CHECK_COMMAND = "`metrics-relay --config.check --config.file=FILE` checks every file without starting"
_MATERIAL_ACTIONS = {
    "tls_config.ca_file": "mount the PEM certificate of the CA that signed the upstream's certificate "
    "(ca.crt of the Secret) where tls_config.ca_file points",
    "tls_config.cert_file": "mount the PEM client certificate (tls.crt of the Secret) where "
    "tls_config.cert_file points",
    "tls_config.key_file": "mount the unencrypted PEM key of tls_config.cert_file (tls.key of the Secret) "
    "where tls_config.key_file points",
    "bearer_token_file": "write the token alone, on one line, into bearer_token_file",
}


def _material_action(field: str, problem: str) -> str:
    if field == "tls_config.cert_file" and ("expired" in problem or "not valid before" in problem):
        first = rotate_action("tls_config.cert_file")
    else:
        first = _MATERIAL_ACTIONS.get(field, "check the files of tls_config and bearer_token_file")
    return f"{first}; {_CHECK_COMMAND}"


def rotate_action(cert_file: str) -> str:
    """What to do about an expired client certificate (`cert_file` is named in the command to check it)."""
    return (
        "renew the client certificate and update its Secret (the relay picks up new files without a "
        f"restart); see its dates with {dates_command(cert_file)}"
    )


def dates_command(cert_file: str) -> str:
    """The command that shows a certificate file's validity period."""
    return f"`openssl x509 -noout -startdate -enddate -in {cert_file}`"


class UpstreamConnectError(ScrapeError):
    """No answer could be had from the upstream: DNS, refused, reset, closed."""

    reason = "connect"
    usual_cause = "the upstream could not be reached"
    usual_action = "check the host and port of url and the network between the relay's pod and it"


class UpstreamTLSError(ScrapeError):
    """The TLS handshake failed, or the upstream refused the client certificate."""

    reason = "tls"
    usual_cause = "the TLS handshake with the upstream failed"
    usual_action = "compare with `openssl s_client -connect HOST:PORT` from the relay's node"


class UpstreamStatusError(ScrapeError):
    """The upstream answered with a status other than 200."""

    reason = "http_status"
    usual_cause = "the upstream did not answer with its metrics"
    usual_action = "look at the upstream's log"


class UpstreamContentTypeError(ScrapeError):
    """The upstream's Content-Type is not one the relay can relay."""

    reason = "content_type"
    usual_cause = "the url does not answer in a Prometheus exposition format"
    usual_action = "point url at the Prometheus metrics endpoint"


class UpstreamBodyError(ScrapeError):
    """The upstream body ended before its announced end or broke off."""

    reason = "body"
    usual_cause = "the connection broke before the body's end"
    usual_action = "look at the upstream's log and at any proxy on the way"


class InvalidExpositionError(ScrapeError):
    """The upstream body is not valid text format or OpenMetrics (Prometheus would fail the scrape too)."""

    reason = "parse"
    usual_cause = "the upstream's body has a line Prometheus would refuse too"
    usual_action = (
        "fix the exporter's output, or set `on_invalid_line: drop` to skip such lines (they are counted)"
    )


class LimitExceededError(ScrapeError):
    """A configured limit was passed (body_size_limit, sample_limit, ...)."""

    reason = "limit"
    usual_cause = "the body goes past a limit set for this upstream"
    usual_action = (
        "raise the limit named above in the upstream's configuration (0 means no limit), "
        "or have the upstream send less"
    )


class DeadlineExceededError(ScrapeError):
    """The scrape's deadline passed."""

    reason = "deadline"
    status = 504
    usual_cause = "the upstream took longer than the scrape's deadline"
    usual_action = (
        "raise the upstream's timeout and the scraper's scrape_timeout, or make the upstream answer faster"
    )


class ScraperGoneError(ScrapeError):
    """The scraper went away before its body was complete; recorded, never sent."""

    reason = "scraper_gone"
    usual_cause = "the scraper gave up (its scrape_timeout) or was stopped before its body was complete"
    usual_action = (
        "nothing if it is rare; if it repeats, give the scraper a scrape_timeout longer than "
        "the upstream takes"
    )


class ShutdownError(ScrapeError):
    """The relay shut down before the body was complete: the grace period ended, or a second signal came."""

    reason = "shutdown"
    usual_cause = "the relay was stopped (SIGTERM) and the scrape outlived --web.shutdown-grace-period"
    usual_action = (
        "nothing if it happens at a rollout; if scrapes are cut often, raise --web.shutdown-grace-period "
        "(and the pod's terminationGracePeriodSeconds with it)"
    )


class RelayInternalError(ScrapeError):
    """Something the relay did not expect: a bug, logged with its traceback."""

    reason = "internal"
    usual_cause = "a bug in the relay"
    usual_action = "report it with the log line and its traceback"


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
    ShutdownError,
    RelayInternalError,
)
"""Every concrete scrape failure, so that metrics can initialise one series per reason up front."""
