"""`metrics-relay kubeconfig-secret`: the client TLS Secret manifest straight from a kubeconfig context."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from relay.kubeconfig import (
    CertificateSummary,
    KubeconfigError,
    SecretMaterial,
    quoted,
    secret_material,
    timestamp,
)

SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - the name of a Secret type, not a password
"""The API server checks that tls.crt and tls.key are present; ca.crt is allowed beside them."""

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAMESPACE = re.compile(_DNS_LABEL)
_SECRET_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_LABEL_RULE = "lower-case letters, digits and '-', starting and ending with a letter or digit"


def _kubernetes_name(pattern: re.Pattern[str], longest: int, what: str, rule: str) -> Callable[[str], str]:
    """An argparse type accepting the names Kubernetes accepts for `what` (`rule` says which those are)."""

    def checked(value: str) -> str:
        if len(value) > longest or not pattern.fullmatch(value):
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a valid {what}: {rule}, at most {longest} characters"
            )
        return value

    return checked


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The subcommand's flags (INTERFACE.md), in the dotted style of the relay's own."""
    parser = argparse.ArgumentParser(
        prog="metrics-relay kubeconfig-secret",
        description="Print a Kubernetes Secret (ca.crt, tls.crt, tls.key) with the client certificate of a "
        "kubeconfig context, for the relay's tls_config. Facts about the certificate go to stderr, so "
        "the output can be piped to `kubectl apply -f -`.",
    )
    parser.add_argument("--kubeconfig", type=Path, metavar="PATH", required=True)
    parser.add_argument("--context", metavar="NAME", help="the context to use (default: current-context)")
    parser.add_argument(
        "--namespace",
        metavar="NS",
        required=True,
        type=_kubernetes_name(_NAMESPACE, 63, "namespace", _LABEL_RULE),
        help="the Secret's namespace: where the relay runs",
    )
    parser.add_argument(
        "--name",
        metavar="NAME",
        required=True,
        type=_kubernetes_name(_SECRET_NAME, 253, "Secret name", _LABEL_RULE + ", in parts joined by '.'"),
        help="the Secret's name (deploy/base mounts metrics-relay-client-tls)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Run the subcommand with these arguments (those after `kubeconfig-secret`); the exit code."""
    args = parse_args(argv)
    try:
        material = _material(args.kubeconfig, args.context)
    except KubeconfigError as exc:
        print(f"metrics-relay kubeconfig-secret: {exc}", file=sys.stderr)
        return 1
    for line in describe(material, datetime.now(UTC)):
        print(line, file=sys.stderr)
    sys.stdout.write(render(secret_manifest(material, namespace=args.namespace, name=args.name)))
    return 0


def _material(path: Path, context: str | None) -> SecretMaterial:
    """Read the kubeconfig and the files it names (the I/O edge), then take the material from it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KubeconfigError(f"{path}: no such file; give the kubeconfig's path with --kubeconfig") from None
    except OSError as exc:
        raise KubeconfigError(f"{path}: cannot read the kubeconfig: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KubeconfigError(f"{path}: not a kubeconfig: the file is not UTF-8 text") from None
    # As kubectl: relative to the folder of the path as given, symbolic links not followed.
    return secret_material(
        text, source=str(path), base_dir=path.absolute().parent, read_file=Path.read_bytes, context=context
    )


def secret_manifest(material: SecretMaterial, *, namespace: str, name: str) -> dict[str, Any]:
    """The v1 Secret holding the material under the keys deploy/base mounts."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "metrics-relay"},
        },
        "type": SECRET_TYPE,
        "data": material.data(),
    }


def render(manifest: dict[str, Any]) -> str:
    """The manifest as one YAML document, in the order kubectl users read it, base64 on one line each."""
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, width=1 << 20)


def describe(material: SecretMaterial, now: datetime) -> list[str]:
    """What stderr says: where the material came from, the identity it carries, its expiry, warnings."""
    client = material.client_certificate
    identity = (
        f"Kubernetes user {quoted(client.user) if client.user else '(none: the certificate has no CN)'}"
    )
    if client.groups:
        identity += f", groups {', '.join(quoted(group) for group in client.groups)}"
    lines = [
        f"from context {quoted(material.context)}: cluster {quoted(material.cluster)}"
        + (f" ({material.server})" if material.server else "")
        + f", user {quoted(material.user)}",
        f"client certificate: {client.subject} ({identity}), {_validity(client, now)}",
        *(f"CA certificate: {ca.subject}, {_validity(ca, now)}" for ca in material.ca_certificates),
    ]
    lines.extend(f"warning: {warning}" for warning in material.warnings(now))
    return lines


def _validity(certificate: CertificateSummary, now: datetime) -> str:
    if now >= certificate.not_after:
        return f"expired at {timestamp(certificate.not_after)}"
    return (
        f"valid until {timestamp(certificate.not_after)} ({(certificate.not_after - now).days} days from now)"
    )
