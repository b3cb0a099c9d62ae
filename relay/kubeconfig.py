"""A kubeconfig's context, read as kubectl reads it, to the client TLS material of the relay's Secret."""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay.keypair import KeyPairError, PairProblem, read_key_pair

ReadFile = Callable[[Path], bytes]
"""Reads a file the kubeconfig names (raising OSError): the caller's edge, so this module does no I/O."""

EXPIRY_WARNING = timedelta(days=7)
"""A client certificate expiring sooner than this gets a warning: the Secret would need replacing soon."""

NO_CERTIFICATE_ACTION = (
    "the ACK aggregator needs a client certificate: download the kubeconfig with a client certificate "
    "from the ACK console (the cluster's Cluster Information page, Connection Information tab), which "
    "embeds client-certificate-data and client-key-data"
)


class KubeconfigError(Exception):
    """The kubeconfig cannot give the Secret's material: the message names the cause and what to do."""


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What a certificate says of itself that may be shown: subject, validity, the Kubernetes identity."""

    subject: str
    not_before: datetime
    not_after: datetime
    user: str | None
    groups: tuple[str, ...]

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertificateSummary:
        """The summary of a parsed certificate; Kubernetes reads CN as the user and each O as a group."""
        subject = certificate.subject
        common_names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return cls(
            subject=subject.rfc4514_string(),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            user=str(common_names[0].value) if common_names else None,
            groups=tuple(str(o.value) for o in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)),
        )


@dataclass(frozen=True, slots=True)
class SecretMaterial:
    """The Secret's three PEM values from one kubeconfig context, checked, with what may be said of them."""

    context: str
    cluster: str
    user: str
    server: str | None
    ca_crt: bytes
    tls_crt: bytes
    tls_key: bytes = field(repr=False)  # a secret: never in a repr, a log line or a message
    client_certificate: CertificateSummary
    ca_certificates: tuple[CertificateSummary, ...]
    notes: tuple[str, ...] = ()

    def data(self) -> dict[str, str]:
        """The Secret's `data`: each key's PEM value in base64, under the names deploy/base mounts."""
        values = {"ca.crt": self.ca_crt, "tls.crt": self.tls_crt, "tls.key": self.tls_key}
        return {key: base64.b64encode(value).decode("ascii") for key, value in values.items()}

    def warnings(self, now: datetime) -> list[str]:
        """What is wrong or soon wrong with the material at `now`, besides the notes: expiries."""
        found = list(self.notes)
        client = self.client_certificate
        if now >= client.not_after:
            found.append(
                f"the client certificate expired at {timestamp(client.not_after)}: the aggregator refuses "
                "it and the relay will not load it; download a fresh kubeconfig"
            )
        elif now < client.not_before:
            found.append(f"the client certificate is not valid before {timestamp(client.not_before)}")
        elif client.not_after - now < EXPIRY_WARNING:
            found.append(
                f"the client certificate expires at {timestamp(client.not_after)}, in "
                f"{_duration(client.not_after - now)}: plan its replacement now"
            )
        found.extend(
            f"a CA certificate in ca.crt ({ca.subject}) expired at {timestamp(ca.not_after)}"
            for ca in self.ca_certificates
            if now >= ca.not_after
        )
        return found


def secret_material(
    text: str, *, source: str, base_dir: Path, read_file: ReadFile, context: str | None = None
) -> SecretMaterial:
    """The CA, client certificate and key of `context` (default: current-context) in kubeconfig `text`.

    `source` names the kubeconfig in messages; relative file paths in it are resolved against `base_dir`
    (the kubeconfig's folder, as kubectl does) and read with `read_file`. KubeconfigError for anything
    that keeps the material from working, never with key material in its message.
    """
    document = _load(text, source)
    contexts = _named(document, "contexts", "context", source)
    clusters = _named(document, "clusters", "cluster", source)
    users = _named(document, "users", "user", source)
    chosen = _chosen_context(document, contexts, context, source)
    where = f"{source}: context {quoted(chosen)}"
    cluster_name = _reference(contexts[chosen], "cluster", clusters, where)
    user_name = _reference(contexts[chosen], "user", users, where)
    files = _Files(base_dir, read_file)

    user_where = f"{source}: user {quoted(user_name)} (context {quoted(chosen)})"
    tls_crt, tls_key = _client_files(users[user_name], files, user_where, _with_certificates(contexts, users))
    cluster = clusters[cluster_name]
    cluster_where = f"{source}: cluster {quoted(cluster_name)}"
    ca_crt = files.material(cluster, "certificate-authority", cluster_where)
    skips_verification = cluster.get("insecure-skip-tls-verify") is True
    if ca_crt is None:
        raise KubeconfigError(_missing_ca(cluster_where, skips_verification=skips_verification))
    skip_note = (
        f"cluster {quoted(cluster_name)} sets insecure-skip-tls-verify, but it has a CA: with ca.crt the "
        "relay can verify the upstream, so keep tls_config.insecure_skip_verify false"
    )
    server = cluster.get("server")
    return SecretMaterial(
        context=chosen,
        cluster=cluster_name,
        user=user_name,
        server=server if isinstance(server, str) else None,
        ca_crt=ca_crt,
        tls_crt=tls_crt,
        tls_key=tls_key,
        client_certificate=CertificateSummary.of(_client_pair(tls_crt, tls_key, user_where)),
        ca_certificates=_ca_certificates(ca_crt, cluster_where),
        notes=(skip_note,) if skips_verification else (),
    )


def _client_files(
    user: Mapping[str, Any], files: _Files, where: str, alternatives: list[str]
) -> tuple[bytes, bytes]:
    """The user's client certificate and key, both present; else why this user cannot serve."""
    tls_crt = files.material(user, "client-certificate", where)
    tls_key = files.material(user, "client-key", where)
    if tls_crt is not None and tls_key is not None:
        return tls_crt, tls_key
    if tls_crt is None and tls_key is None:
        raise KubeconfigError(_no_client_certificate(user, where, alternatives))
    present, absent = (
        ("client-certificate", "client-key") if tls_key is None else ("client-key", "client-certificate")
    )
    raise KubeconfigError(
        f"{where} has {present}(-data) but no {absent}-data or {absent}: the Secret needs both; "
        "download the kubeconfig again"
    )


# --- the document ----------------------------------------------------------------------------------


def _load(text: str, source: str) -> dict[str, Any]:
    """The kubeconfig as a mapping; a YAML error says where, never quoting the line (it may hold a key)."""
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise KubeconfigError(f"{source}: not YAML{at}: {exc.problem or exc.context}") from None
    except yaml.YAMLError:
        raise KubeconfigError(f"{source}: not YAML") from None
    if not isinstance(document, dict):
        raise KubeconfigError(
            f"{source}: not a kubeconfig: expected a mapping with clusters, users, contexts"
        )
    kind = document.get("kind", "Config")
    if kind != "Config":
        raise KubeconfigError(f"{source}: not a kubeconfig: its kind is {quoted(kind)}, not Config")
    return document


def _named(
    document: Mapping[str, Any], section: str, body_key: str, source: str
) -> dict[str, dict[str, Any]]:
    """A `- name: N\\n  <body_key>: {...}` list of the kubeconfig as a mapping of name to body."""
    entries = document.get(section) or []
    if not isinstance(entries, list):
        raise KubeconfigError(f"{source}: {section} must be a list of entries with name and {body_key}")
    found: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        where = f"{source}: {section}[{index}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise KubeconfigError(f"{where}: an entry needs a name (a string)")
        body = entry.get(body_key) or {}
        if not isinstance(body, dict):
            raise KubeconfigError(f"{where}: {body_key} of {quoted(name)} must be a mapping")
        if name in found:
            raise KubeconfigError(f"{where}: a second entry is called {quoted(name)}: rename one of them")
        found[name] = body
    return found


def _chosen_context(
    document: Mapping[str, Any], contexts: Mapping[str, Any], asked: str | None, source: str
) -> str:
    """The context asked for, else current-context; an error listing the contexts when neither works."""
    available = ", ".join(quoted(name) for name in contexts) or "none"
    if asked is None:
        current = document.get("current-context")
        if not isinstance(current, str) or not current:
            raise KubeconfigError(
                f"{source}: no current-context is set; choose one with --context (contexts: {available})"
            )
        asked, how = current, "current-context names"
    else:
        how = "--context names"
    if asked not in contexts:
        raise KubeconfigError(
            f"{source}: {how} context {quoted(asked)}, which the kubeconfig does not define; "
            f"contexts: {available}"
        )
    return asked


def _reference(context_body: Mapping[str, Any], key: str, entries: Mapping[str, Any], where: str) -> str:
    """The cluster or user a context names, which must exist."""
    name = context_body.get(key)
    available = ", ".join(quoted(each) for each in entries) or "none"
    if not isinstance(name, str) or not name:
        raise KubeconfigError(f"{where} names no {key}: set its {key} to one of the {key}s ({available})")
    if name not in entries:
        raise KubeconfigError(
            f"{where} names {key} {quoted(name)}, which the kubeconfig does not define; {key}s: {available}"
        )
    return name


@dataclass(frozen=True, slots=True)
class _Files:
    """Reads PEM values a kubeconfig holds inline (`<field>-data`, base64) or names (`<field>`, a file)."""

    base_dir: Path
    read_file: ReadFile

    def material(self, body: Mapping[str, Any], name: str, where: str) -> bytes | None:
        """The value of field `name` of a cluster or user, or None when neither form is set (or empty)."""
        data_key = f"{name}-data"
        inline, path = body.get(data_key), body.get(name)
        if inline and path:
            # kubectl lets the data win silently; a Secret built from the other one would surprise.
            raise KubeconfigError(
                f"{where} sets both {data_key} and {name}: keep only one (kubectl would use {data_key})"
            )
        if inline:
            return _decoded(inline, f"{where}: {data_key}")
        if path:
            return self._read(path, f"{where}: {name}")
        return None

    def _read(self, path: object, where: str) -> bytes:
        if not isinstance(path, str):
            raise KubeconfigError(f"{where} must be a file path (a string)")
        # An absolute path stays as it is; `..` is removed lexically, as Go's filepath.Join does for kubectl.
        resolved = Path(os.path.normpath(self.base_dir / path))
        try:
            return self.read_file(resolved)
        except FileNotFoundError:
            hint = (
                "" if Path(path).is_absolute() else f" (relative to the kubeconfig's folder {self.base_dir})"
            )
            raise KubeconfigError(f"{where} names {resolved}{hint}, which does not exist") from None
        except OSError as exc:
            raise KubeconfigError(
                f"{where} names {resolved}, which cannot be read: {exc.strerror or exc}"
            ) from None


def _decoded(value: object, where: str) -> bytes:
    """A `*-data` value: base64 as Go decodes it for kubectl (line breaks ignored, nothing else)."""
    if not isinstance(value, str):
        raise KubeconfigError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KubeconfigError(
            f"{where} is not valid base64 ({exc}); copy it again whole, or name the PEM file instead"
        ) from None


# --- what the values must be -----------------------------------------------------------------------


def _missing_ca(where: str, *, skips_verification: bool) -> str:
    if skips_verification:
        return (
            f"{where} sets insecure-skip-tls-verify and has no certificate-authority-data or "
            "certificate-authority, so there is no CA for ca.crt. Add the CA that signed the API server's "
            "certificate to the kubeconfig (the ACK console's kubeconfig embeds it); an unverified upstream "
            "would instead need tls_config.insecure_skip_verify: true and no ca_file in the relay's "
            "configuration, which lets anyone on the path read the metrics"
        )
    return (
        f"{where} has no certificate-authority-data or certificate-authority, so there is no CA for "
        "ca.crt: add the CA that signed the API server's certificate to the kubeconfig (the ACK console's "
        "kubeconfig embeds it)"
    )


def _ca_certificates(pem: bytes, where: str) -> tuple[CertificateSummary, ...]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise KubeconfigError(f"{where}: certificate-authority(-data) holds no PEM certificate") from None
    return tuple(CertificateSummary.of(certificate) for certificate in certificates)


_PAIR_PROBLEMS = {
    PairProblem.CERTIFICATE_NOT_PEM: "the client certificate is not a PEM certificate",
    PairProblem.KEY_ENCRYPTED: (
        "the client key is encrypted; the relay never asks for a passphrase: decrypt it "
        "(openssl pkey -in KEY -out KEY.plain) and name the plain file"
    ),
    PairProblem.KEY_NOT_PEM: "the client key is not a PEM private key",
    PairProblem.PUBLIC_KEY_UNREADABLE: "the client certificate's public key cannot be read",
    PairProblem.MISMATCH: "the client key does not belong to the client certificate; take both from the same "
    "kubeconfig download",
}


def _client_pair(cert_pem: bytes, key_pem: bytes, where: str) -> x509.Certificate:
    """The client certificate, checked to parse and to belong to the key, which must parse unencrypted."""
    try:
        certificate = read_key_pair(cert_pem, key_pem)
    except KeyPairError as exc:
        raise KubeconfigError(f"{where}: {_PAIR_PROBLEMS[exc.problem]}") from None
    if not _for_client_authentication(certificate):
        raise KubeconfigError(
            f"{where}: the client certificate's extended key usage does not include client authentication, "
            "so the API server refuses it; this is not a kubeconfig client certificate"
        )
    return certificate


def _for_client_authentication(certificate: x509.Certificate) -> bool:
    """Whether TLS allows the certificate to identify a client: no extended key usage means any."""
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return bool({ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(usages))


def _no_client_certificate(user: Mapping[str, Any], where: str, alternatives: list[str]) -> str:
    """Why a user without a client certificate cannot be used, by how it does authenticate."""
    if user.get("exec"):
        how = "with an exec plugin"
    elif user.get("auth-provider"):
        how = "with an auth-provider plugin"
    elif user.get("token") or user.get("tokenFile"):
        how = "with a token"
    elif user.get("username") or user.get("password"):
        how = "with a username and password"
    else:
        how = "with nothing (it has no credentials)"
    others = f"; contexts here whose user has one: {', '.join(alternatives)}" if alternatives else ""
    return (
        f"{where} has no client certificate: this user authenticates {how}; {NO_CERTIFICATE_ACTION}{others}"
    )


def _with_certificates(contexts: Mapping[str, Mapping[str, Any]], users: Mapping[str, Any]) -> list[str]:
    """The contexts whose user has a client certificate, to suggest instead."""
    found = []
    for name, body in contexts.items():
        user = users.get(body["user"]) if isinstance(body.get("user"), str) else None
        if user and (user.get("client-certificate-data") or user.get("client-certificate")):
            found.append(quoted(name))
    return found


def quoted(value: object) -> str:
    """A name from the kubeconfig for a message: in double quotes, control characters escaped."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else json.dumps(str(value))


def timestamp(moment: datetime) -> str:
    """A moment as messages write it, in UTC to the second."""
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def _duration(span: timedelta) -> str:
    hours = int(span.total_seconds() // 3600)
    return f"{hours // 24} days" if hours >= 48 else f"{hours} hours"
