"""An upstream's client credentials (TLS context, bearer token) from files: checked, re-read on change.

Kubernetes rotates Secret volumes by swapping a symlink, so the files are read again on every scrape and
hashed; only a change of content builds a new SSLContext. A new set that is unusable never replaces a good
one: the last good credentials stay in use and the problem is logged and counted.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from relay.config import TLSConfig, UpstreamConfig
from relay.errors import ClientTLSMaterialError, dates_command, rotate_action
from relay.failures import Diagnosis
from relay.keypair import KeyPairError, PairProblem, read_key_pair

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What the relay knows of its own client certificate, for hints, metrics and the landing page."""

    subject: str
    not_before: datetime
    not_after: datetime

    def problem_at(self, now: datetime) -> str:
        """Why an upstream would refuse this certificate at `now`, or ''."""
        if now > self.not_after:
            return f"the client certificate expired at {self.not_after:%Y-%m-%dT%H:%M:%SZ}"
        if now < self.not_before:
            return f"the client certificate is not valid before {self.not_before:%Y-%m-%dT%H:%M:%SZ}"
        return ""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Everything a request to one upstream needs from files: TLS context, certificate facts, token."""

    ssl_context: ssl.SSLContext | None
    certificate: CertificateFacts | None
    authorization: str | None = field(repr=False)  # a secret: never in a repr or a log line
    fingerprint: str
    ca_not_after: datetime | None = None  # the earliest expiry among ca_file's certificates; None without one

    def refusal_hint(self, cert_file: Path | None = None) -> Diagnosis | None:
        """Why an upstream may refuse these credentials, for errors that come without a reason; None for HTTP.

        Over TLS a refused client certificate usually shows as nothing but a closed connection. `cert_file`
        is named in the commands the advice gives.
        """
        if self.ssl_context is None:
            return None
        if self.certificate is None:
            return Diagnosis(
                cause="no client certificate is configured (tls_config.cert_file and key_file)",
                action="set tls_config.cert_file and key_file to the client certificate and its key "
                "(tls.crt and tls.key of the Secret)",
                certain=True,
            )
        now = datetime.now(UTC)
        shown = cert_file or "tls_config.cert_file"
        problem = self.certificate.problem_at(now)
        if now > self.certificate.not_after:
            return Diagnosis(cause=problem, action=rotate_action(str(shown)), certain=True)
        if problem:
            return Diagnosis(
                cause=problem,
                action="check the clock of the relay's node, or use a certificate valid now; see its dates "
                f"with {dates_command(str(shown))}",
                certain=True,
            )
        return Diagnosis(
            cause=f"the upstream may not trust the CA that signed the client certificate "
            f"({self.certificate.subject})",
            action="check that the upstream trusts the CA that signed the client certificate "
            f"(kube-apiserver: --client-ca-file): `openssl x509 -noout -issuer -subject -in {shown}`",
        )


class CredentialSource:
    """Reads one upstream's credential files on demand and rebuilds them only when their content changed."""

    def __init__(self, upstream: UpstreamConfig) -> None:
        self._upstream = upstream
        self._good: Credentials | None = None
        self._last_failed_fingerprint = ""
        self.loaded_at: float | None = None
        """time.time() of the last load or reload of a set that is now in use; None before any."""
        self.refused: ClientTLSMaterialError | None = None
        """Why the files' current set is refused while the last good one stays in use; None otherwise."""

    @property
    def last_good(self) -> Credentials | None:
        """The credentials in use, if any set has loaded yet."""
        return self._good

    def current(self) -> Credentials:
        """The credentials to use now: the files' current content, or the last good set if that is broken.

        Raises ClientTLSMaterialError only when no good set has ever loaded.
        """
        try:
            contents = _read_files(self._upstream)
        except ClientTLSMaterialError as exc:
            return self._keep_last_good(exc, fingerprint=f"unreadable:{exc.message}")
        fingerprint = _fingerprint(contents)
        if self._good is not None and self._good.fingerprint == fingerprint:
            self.refused = None
            return self._good
        try:
            credentials = self._build_replacement(contents, fingerprint)
        except ClientTLSMaterialError as exc:
            return self._keep_last_good(exc, fingerprint)
        except (ValueError, ssl.SSLError, UnsupportedAlgorithm) as exc:  # whatever the checks above missed
            return self._keep_last_good(
                ClientTLSMaterialError("tls_config", f"unusable files ({exc})"), fingerprint
            )
        if self._good is not None:
            log.info(
                "credentials changed on disk; using the new set",
                extra={"upstream": self._upstream.name, "fingerprint": fingerprint[:16]},
            )
        self._good = credentials
        self.loaded_at = time.time()
        self.refused = None
        return credentials

    def _build_replacement(self, contents: dict[str, bytes], fingerprint: str) -> Credentials:
        """Credentials from new file contents; an expired certificate never replaces a good set."""
        credentials = _build(self._upstream, contents, fingerprint)
        expired = credentials.certificate.problem_at(datetime.now(UTC)) if credentials.certificate else ""
        if expired and self._good is not None:
            raise ClientTLSMaterialError("tls_config.cert_file", expired)
        if expired:
            # The first set is taken anyway: the relay serves its own metrics and pages, which say why.
            log.warning(
                "using a client certificate outside its validity period; the upstream will likely refuse it",
                extra={"upstream": self._upstream.name, "error": expired},
            )
        return credentials

    def _keep_last_good(self, exc: ClientTLSMaterialError, fingerprint: str) -> Credentials:
        if self._good is None:
            raise exc
        self.refused = exc
        if fingerprint != self._last_failed_fingerprint:
            self._last_failed_fingerprint = fingerprint
            log.error(
                "new credentials are unusable; keeping the last good set",
                extra={"upstream": self._upstream.name, "error": exc.detail},
            )
        return self._good


def check(upstream: UpstreamConfig) -> None:
    """Load the upstream's credentials once; raise ClientTLSMaterialError naming the first problem."""
    contents = _read_files(upstream)
    _build(upstream, contents, _fingerprint(contents))


@dataclass(frozen=True, slots=True)
class CredentialProblem:
    """One thing wrong with an upstream's credential files, for a configuration check."""

    setting: str  # as in the file below the upstream: `tls_config.key_file`
    message: str  # what is wrong, without the path (the check shows it as written and as resolved)
    validity: bool = False  # the certificate is usable but outside its validity period (start-up takes it)


@dataclass(frozen=True, slots=True)
class CheckedCredentials:
    """What checking an upstream's credential files found: every problem, and the set if it loaded."""

    problems: tuple[CredentialProblem, ...]
    credentials: Credentials | None


def check_all(upstream: UpstreamConfig, now: datetime) -> CheckedCredentials:
    """Every problem of the upstream's credential files (each file read, CA, pair, token, validity at
    `now`), not only the first; the credentials when they loaded."""
    contents: dict[str, bytes] = {}
    problems: list[CredentialProblem] = []
    for setting, path in _paths(upstream).items():
        if path is not None:
            try:
                contents[setting] = path.read_bytes()
            except OSError as exc:
                problems.append(CredentialProblem(setting, f"cannot read: {exc.strerror or exc}"))
    if problems:
        return CheckedCredentials(tuple(problems), None)
    credentials = None
    try:
        credentials = _build(upstream, contents, _fingerprint(contents))
    except ClientTLSMaterialError as exc:
        problems.append(CredentialProblem(exc.field, exc.problem))
    except (ValueError, ssl.SSLError, UnsupportedAlgorithm) as exc:  # whatever the checks missed
        problems.append(CredentialProblem("tls_config", f"unusable files ({exc})"))
    if credentials is not None and credentials.certificate is not None:
        validity = credentials.certificate.problem_at(now)
        if validity:
            problems.append(CredentialProblem("tls_config.cert_file", validity, validity=True))
    return CheckedCredentials(tuple(problems), credentials)


def shown_path(upstream: UpstreamConfig, setting: str) -> str:
    """A setting's file as written and, when that differs, as resolved: `"tls/ca.crt" (/etc/r/tls/ca.crt)`."""
    written = {
        **upstream.written,
        **{f"tls_config.{key}": text for key, text in upstream.tls_config.written.items()},
    }
    path = _paths(upstream).get(setting)
    if path is None or setting not in written:
        return ""
    text = written[setting]
    return f'"{text}"' if Path(text) == path else f'"{text}" ({path})'


def setting_line(upstream: UpstreamConfig, setting: str) -> int | None:
    """The line of a credential setting (`tls_config.key_file`), else of its section, else the upstream's."""
    section, _, key = setting.partition(".")
    if section == "tls_config":
        tls_lines = upstream.tls_config.lines
        return (tls_lines.get(key) if key else None) or upstream.lines.get("tls_config")
    return upstream.lines.get(setting) or upstream.lines.get("")


# --- reading and building ---------------------------------------------------------------------------

_FILE_FIELDS = ("tls_config.ca_file", "tls_config.cert_file", "tls_config.key_file", "bearer_token_file")


def _paths(upstream: UpstreamConfig) -> dict[str, Path | None]:
    tls = upstream.tls_config
    return dict(
        zip(_FILE_FIELDS, (tls.ca_file, tls.cert_file, tls.key_file, upstream.bearer_token_file), strict=True)
    )


def _read_files(upstream: UpstreamConfig) -> dict[str, bytes]:
    contents = {}
    for setting, path in _paths(upstream).items():
        if path is None:
            continue
        try:
            contents[setting] = path.read_bytes()
        except OSError as exc:
            raise ClientTLSMaterialError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    return contents


def _fingerprint(contents: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for setting in _FILE_FIELDS:
        digest.update(setting.encode() + b"\0" + contents.get(setting, b"\0absent") + b"\0")
    return digest.hexdigest()


def _build(upstream: UpstreamConfig, contents: dict[str, bytes], fingerprint: str) -> Credentials:
    tls = upstream.tls_config
    context: ssl.SSLContext | None = None
    certificate: CertificateFacts | None = None
    if upstream.url.startswith("https:"):
        context = _context(tls, contents.get("tls_config.ca_file"))
        if tls.cert_file is not None and tls.key_file is not None:
            certificate = _load_client_pair(
                context,
                tls.cert_file,
                tls.key_file,
                contents["tls_config.cert_file"],
                contents["tls_config.key_file"],
            )
    ca_pem = contents.get("tls_config.ca_file")
    ca_not_after = _earliest_expiry(ca_pem) if ca_pem is not None else None
    token = contents.get("bearer_token_file")
    authorization = None
    if token is not None:
        text = token.decode("utf-8", errors="replace").strip()
        if not text:
            raise ClientTLSMaterialError("bearer_token_file", "the file is empty")
        if not text.isprintable():
            raise ClientTLSMaterialError(
                "bearer_token_file", "the token holds a line break or control character"
            )
        authorization = f"Bearer {text}"
    if certificate is not None and _fingerprint(_read_files(upstream)) != fingerprint:
        # load_cert_chain read the files again: make sure it saw what was checked.
        raise ClientTLSMaterialError("tls_config.cert_file", "the files changed while they were loaded")
    return Credentials(context, certificate, authorization, fingerprint, ca_not_after)


def _earliest_expiry(ca_pem: bytes) -> datetime | None:
    """The earliest not_after among the PEM certificates of a CA bundle (None if none parse)."""
    try:
        certificates = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        return None
    return min((certificate.not_valid_after_utc for certificate in certificates), default=None)


def _context(tls: TLSConfig, ca_pem: bytes | None) -> ssl.SSLContext:
    # ca_file replaces the system's CAs, as in Prometheus: a public CA must not vouch for the upstream.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_pem is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        if _earliest_expiry(ca_pem) is None:
            raise ClientTLSMaterialError(
                "tls_config.ca_file", "no PEM CA certificate could be loaded from it"
            )
        try:
            context.load_verify_locations(cadata=ca_pem.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise ClientTLSMaterialError(
                "tls_config.ca_file", f"no PEM CA certificate could be loaded ({exc})"
            ) from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.min_version is not None:
        context.minimum_version = tls.min_version
    return context


_PAIR_PROBLEMS: dict[PairProblem, tuple[str, str]] = {
    PairProblem.CERTIFICATE_NOT_PEM: ("tls_config.cert_file", "not a PEM certificate"),
    PairProblem.KEY_ENCRYPTED: (
        "tls_config.key_file",
        "the key is encrypted; the relay never prompts for a passphrase: "
        "store the key unencrypted in the Secret",
    ),
    PairProblem.KEY_NOT_PEM: ("tls_config.key_file", "not a PEM private key"),
    PairProblem.PUBLIC_KEY_UNREADABLE: (
        "tls_config.cert_file",
        "the certificate's public key cannot be read",
    ),
    PairProblem.MISMATCH: ("tls_config.key_file", "the key does not match tls_config.cert_file"),
}


def _load_client_pair(
    context: ssl.SSLContext, cert_path: Path, key_path: Path, cert_pem: bytes, key_pem: bytes
) -> CertificateFacts:
    """Check the certificate and key ourselves (clear messages), then hand them to the context."""
    try:
        certificate = read_key_pair(cert_pem, key_pem)
    except KeyPairError as exc:
        setting, problem = _PAIR_PROBLEMS[exc.problem]
        raise ClientTLSMaterialError(setting, problem) from None
    try:
        # The files were just read and checked; the password callback only guards against a prompt
        # should they have been swapped for an encrypted key in between.
        context.load_cert_chain(cert_path, key_path, password=_refuse_password)
    except (ssl.SSLError, OSError) as exc:
        raise ClientTLSMaterialError(
            "tls_config.cert_file", f"cannot be loaded with its key ({exc})"
        ) from None
    return CertificateFacts(
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def _refuse_password() -> str:
    raise ssl.SSLError("the key is encrypted")
