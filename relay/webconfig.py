"""The web configuration file (--web.config.file) in Prometheus exporter-toolkit's format (pure).

`tls_server_config` (the listener's certificate, client certificates, versions, ciphers, curves),
`http_server_config.headers` and `basic_auth_users` (bcrypt hashes). What Python's ssl module cannot do
as Go's crypto/tls does is refused with the reason, never silently ignored.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from relay.config import TLS_VERSIONS
from relay.errors import ConfigError
from relay.yamlnodes import NodeReader, in_line_order, yaml_problem

# Go's names (tls.CipherSuites(), the secure ones) and OpenSSL's for the same suites, TLS 1.2 and below.
GO_CIPHER_SUITES: dict[str, str] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
# TLS 1.3's suites are always on, in Go as in OpenSSL; naming them changes nothing, as in exporter-toolkit.
TLS13_CIPHER_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
# Python sets one ECDH curve (SSLContext.set_ecdh_curve), and X25519 not at all that way.
GO_CURVES: dict[str, str] = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1"}
CLIENT_AUTH_TYPES: dict[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
# The headers exporter-toolkit lets a user set, and the values it accepts where it restricts them.
HEADERS: dict[str, tuple[str, ...]] = {
    "Content-Security-Policy": (),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": (),
    "Strict-Transport-Security": (),
}
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
FileReader = Callable[[Path], bytes]
"""Reads a file the web configuration names: its bytes, or OSError."""
_BCRYPT_LENGTH = 60


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """The listener's TLS: PEM text of certificate, key and client CA (from files or inline), and policy."""

    cert_pem: bytes
    key_pem: bytes
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    client_ca_pem: bytes | None = None
    client_allowed_sans: tuple[str, ...] = ()
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    ciphers: tuple[str, ...] = ()  # OpenSSL names, in preference order; () for OpenSSL's defaults
    prefer_server_ciphers: bool = True
    curve: str | None = None

    def handshake_policy(self) -> tuple[object, ...]:
        """What a new TLS context cannot change for connections already being accepted: fixed at start."""
        return (
            self.client_auth,
            self.min_version,
            self.max_version,
            self.ciphers,
            self.prefer_server_ciphers,
            self.curve,
        )


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The listener's protection: TLS (None: plain HTTP), response headers and basic auth users."""

    tls: ServerTLS | None = None
    headers: tuple[tuple[str, str], ...] = ()
    users: tuple[tuple[str, bytes], ...] = ()  # user name, bcrypt hash: secrets, never shown
    files: tuple[Path, ...] = ()  # every file it was read from, to notice when one changes


def parse_web_config(text: str, *, source: str, base_dir: Path, read_file: FileReader) -> WebConfig:
    """The web configuration in `text`; ConfigError naming every problem with its line.

    `read_file` reads a file the configuration names (kept out of this module: it does no I/O itself).
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [yaml_problem(exc)]) from None
    reader = _WebConfigReader(base_dir, read_file)
    config = reader.web_config(root)
    if reader.problems:
        raise ConfigError(source, in_line_order(reader.problems))
    return config


class _WebConfigReader(NodeReader):
    """The schema of the web configuration file over the located YAML reader."""

    def __init__(self, base_dir: Path, read_file: FileReader) -> None:
        super().__init__(base_dir)
        self._read_file = read_file
        self._files: list[Path] = []

    def web_config(self, root: yaml.Node | None) -> WebConfig:
        if root is None:
            return WebConfig()
        top = self.mapping(
            root, "", {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
        )
        if "rate_limit" in top:
            self.problem(
                top["rate_limit"],
                "rate_limit",
                "not supported by the relay; --web.max-requests bounds the scrapes served at once",
            )
        tls = self.tls_server_config(top["tls_server_config"]) if "tls_server_config" in top else None
        headers = self.http_server_config(top["http_server_config"]) if "http_server_config" in top else ()
        users = self.users(top["basic_auth_users"]) if "basic_auth_users" in top else ()
        return WebConfig(tls=tls, headers=headers, users=users, files=tuple(self._files))

    def tls_server_config(self, node: yaml.Node) -> ServerTLS | None:  # noqa: PLR0912 - one check a key, as a table
        path = "tls_server_config"
        known = {
            "cert_file",
            "key_file",
            "cert",
            "key",
            "client_auth_type",
            "client_ca_file",
            "client_ca",
            "client_allowed_sans",
            "min_version",
            "max_version",
            "cipher_suites",
            "prefer_server_cipher_suites",
            "curve_preferences",
        }
        fields = self.mapping(node, path, known)
        cert_given = bool(fields.keys() & {"cert", "cert_file"})
        key_given = bool(fields.keys() & {"key", "key_file"})
        if not cert_given and not key_given:
            if fields:
                self.problem(node, path, "needs cert_file and key_file (or cert and key) for TLS")
            return None  # as in exporter-toolkit: no certificate, no TLS
        if cert_given != key_given:
            missing = "cert_file (or cert)" if not cert_given else "key_file (or key)"
            self.problem(node, path, f"needs {missing} too")
        cert = self.pem(fields, "cert", path)
        key = self.pem(fields, "key", path)
        client_auth = ssl.CERT_NONE
        if "client_auth_type" in fields:
            client_auth = self.client_auth_type(fields["client_auth_type"], f"{path}.client_auth_type")
        client_ca = self.pem(fields, "client_ca", path)
        if client_ca is not None and client_auth == ssl.CERT_NONE:
            self.problem(
                node,
                path,
                "client_ca_file is given but client_auth_type is NoClientCert: "
                "set client_auth_type: RequireAndVerifyClientCert to check client certificates",
            )
        if client_ca is None and client_auth != ssl.CERT_NONE:
            self.problem(node, path, "client_auth_type verifies client certificates: it needs client_ca_file")
        sans: tuple[str, ...] = ()
        if "client_allowed_sans" in fields:
            sans = tuple(self.string_list(fields["client_allowed_sans"], f"{path}.client_allowed_sans"))
            if client_auth != ssl.CERT_REQUIRED:
                self.problem(
                    fields["client_allowed_sans"],
                    f"{path}.client_allowed_sans",
                    "needs client_auth_type: RequireAndVerifyClientCert "
                    "(else a client may send no certificate)",
                )
        versions = {"min_version": ssl.TLSVersion.TLSv1_2, "max_version": ssl.TLSVersion.TLSv1_3}
        for name in versions:
            if name in fields:
                text = self.string(fields[name], f"{path}.{name}")
                if text is not None and text not in TLS_VERSIONS:
                    self.problem(
                        fields[name],
                        f"{path}.{name}",
                        f"unknown TLS version {text!r} (use one of {', '.join(TLS_VERSIONS)})",
                    )
                elif text is not None:
                    versions[name] = TLS_VERSIONS[text]
        if versions["min_version"] > versions["max_version"]:
            self.problem(node, path, "min_version is above max_version")
        ciphers = self.cipher_suites(fields["cipher_suites"]) if "cipher_suites" in fields else ()
        prefer = True
        if "prefer_server_cipher_suites" in fields:
            prefer = bool(
                self.boolean(fields["prefer_server_cipher_suites"], f"{path}.prefer_server_cipher_suites")
            )
        curve = self.curve(fields["curve_preferences"]) if "curve_preferences" in fields else None
        if cert is None or key is None:
            return None
        return ServerTLS(
            cert_pem=cert,
            key_pem=key,
            client_auth=client_auth,
            client_ca_pem=client_ca,
            client_allowed_sans=sans,
            min_version=versions["min_version"],
            max_version=versions["max_version"],
            ciphers=ciphers,
            prefer_server_ciphers=prefer,
            curve=curve,
        )

    def pem(self, fields: dict[str, yaml.Node], name: str, path: str) -> bytes | None:
        """The PEM text of `name` given inline or as `name_file`; both at once is a problem."""
        inline, file = fields.get(name), fields.get(f"{name}_file")
        if inline is not None and file is not None:
            self.problem(file, f"{path}.{name}_file", f"give {name} or {name}_file, not both")
            return None
        if inline is not None:
            text = self.string(inline, f"{path}.{name}")
            return text.encode() if text is not None else None
        if file is None:
            return None
        where = f"{path}.{name}_file"
        location = self.path(file, where)
        if location is None:
            return None
        self._files.append(location)
        try:
            return self._read_file(location)
        except OSError as exc:
            self.problem(file, where, f"cannot read {location}: {exc.strerror or exc}")
            return None

    def client_auth_type(self, node: yaml.Node, path: str) -> ssl.VerifyMode:
        text = self.string(node, path)
        if text in _UNVERIFIED_CLIENT_AUTH:
            self.problem(
                node,
                path,
                f"{text} is not supported: Python's ssl module verifies every client certificate "
                "it asks for; use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
            )
        elif text is not None and text not in CLIENT_AUTH_TYPES:
            choices = ", ".join(CLIENT_AUTH_TYPES)
            self.problem(node, path, f"unknown client_auth_type {text!r} (use one of {choices})")
        return CLIENT_AUTH_TYPES.get(text or "", ssl.CERT_NONE)

    def cipher_suites(self, node: yaml.Node) -> tuple[str, ...]:
        path = "tls_server_config.cipher_suites"
        chosen = []
        for index, name in enumerate(self.string_list(node, path)):
            if name in GO_CIPHER_SUITES:
                chosen.append(GO_CIPHER_SUITES[name])
            elif name not in TLS13_CIPHER_SUITES:
                item = node.value[index] if isinstance(node, yaml.SequenceNode) else node
                self.problem(item, f"{path}[{index}]", f"unknown or insecure cipher suite {name!r}")
        return tuple(chosen)

    def curve(self, node: yaml.Node) -> str | None:
        path = "tls_server_config.curve_preferences"
        names = list(self.string_list(node, path))
        if len(names) > 1:
            self.problem(node, path, "Python's ssl module takes one curve: give only the one to use")
            return None
        if not names:
            return None
        if names[0] not in GO_CURVES:
            supported = ", ".join(GO_CURVES)
            self.problem(node, path, f"curve {names[0]!r} cannot be set from Python (use one of {supported})")
            return None
        return GO_CURVES[names[0]]

    def http_server_config(self, node: yaml.Node) -> tuple[tuple[str, str], ...]:
        path = "http_server_config"
        fields = self.mapping(node, path, {"headers", "http2"})
        if "http2" in fields:
            self.boolean(fields["http2"], f"{path}.http2")  # accepted; the relay serves HTTP/1.1 only
        if "headers" not in fields:
            return ()
        headers = []
        for name, value_node in self.mapping(fields["headers"], f"{path}.headers", set(HEADERS)).items():
            where = f"{path}.headers.{name}"
            value = self.string(value_node, where, empty_ok=True)
            allowed = HEADERS[name]
            if value and allowed and value.lower() not in allowed:
                self.problem(value_node, where, f"must be one of {', '.join(allowed)}, not {value!r}")
            elif value:
                headers.append((name, value))
        return tuple(headers)

    def users(self, node: yaml.Node) -> tuple[tuple[str, bytes], ...]:
        users = []
        for name, value_node in self.mapping(node, "basic_auth_users", None).items():
            where = f"basic_auth_users.{name}"
            if ":" in name:
                self.problem(value_node, where, "a user name cannot hold ':' (basic auth splits at it)")
                continue
            hashed = self.string(value_node, where)
            if hashed is None:
                continue
            # The value is a secret: the problem says what is wrong, never what was written.
            if not hashed.startswith(_BCRYPT_PREFIXES) or len(hashed) != _BCRYPT_LENGTH:
                self.problem(
                    value_node,
                    where,
                    "is not a bcrypt hash ($2y$…, 60 characters): make one with "
                    "`htpasswd -nBC 10 \"\" | tr -d ':\\n'`",
                )
                continue
            users.append((name, hashed.encode()))
        return tuple(users)
