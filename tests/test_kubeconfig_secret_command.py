"""`metrics-relay kubeconfig-secret` as users run it: a subprocess on real files, checked against kubectl."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import (
    ClientFiles,
    Pki,
    body_handler,
    config_yaml,
    request_text,
    require_tool,
    running_relay,
    running_upstream,
)
from tests.test_kubeconfig import (
    TOKEN,
    Identity,
    b64,
    embedded_cluster,
    embedded_user,
    issue_identity,
    kubeconfig_document,
)

PREFIX = "metrics-relay kubeconfig-secret: "
NAMESPACE = "monitoring"
SECRET_NAME = "metrics-relay-client-tls"
SECRET_KEYS = ["ca.crt", "tls.crt", "tls.key"]


def run_command(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m relay kubeconfig-secret ARGUMENTS` in folder `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "relay", "kubeconfig-secret", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def secret_flags(kubeconfig: Path, context: str | None = None) -> list[str]:
    """The command's flags for the Secret deploy/base mounts, from this kubeconfig."""
    chosen = [f"--context={context}"] if context else []
    return [f"--kubeconfig={kubeconfig}", *chosen, f"--namespace={NAMESPACE}", f"--name={SECRET_NAME}"]


@dataclass(frozen=True)
class Layout:
    """A kubeconfig written to disk, the context to ask for, and the identity the Secret must carry."""

    kubeconfig: Path
    context: str | None
    identity: Identity


def write(path: Path, content: bytes) -> Path:
    """Write `content` to `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def write_kubeconfig(folder: Path, document: dict[str, Any]) -> Path:
    """`document` as the file `config` in `folder`, as kubectl keeps it in ~/.kube."""
    return write(folder / "config", yaml.safe_dump(document).encode())


def embedded(tmp_path: Path) -> Layout:
    """All three values inline, the current context."""
    identity = issue_identity()
    return Layout(write_kubeconfig(tmp_path / "kube", kubeconfig_document(identity)), None, identity)


def relative_files(tmp_path: Path) -> Layout:
    """The values in files named relative to the kubeconfig's folder (the command runs elsewhere)."""
    identity = issue_identity()
    write(tmp_path / "kube" / "pki" / "ca.crt", identity.ca_pem)
    write(tmp_path / "kube" / "pki" / "relay.crt", identity.cert_pem)
    write(tmp_path / "kube" / "relay.key", identity.key_pem)
    document = kubeconfig_document(identity)
    document["clusters"][0]["cluster"] = {
        "server": "https://10.0.0.10:6443",
        "certificate-authority": "pki/ca.crt",
    }
    document["users"][0]["user"] = {"client-certificate": "pki/relay.crt", "client-key": "./relay.key"}
    return Layout(write_kubeconfig(tmp_path / "kube", document), None, identity)


def absolute_files(tmp_path: Path) -> Layout:
    """The values in files named by absolute paths in another folder."""
    identity = issue_identity()
    elsewhere = tmp_path / "elsewhere"
    document = kubeconfig_document(identity)
    document["clusters"][0]["cluster"] = {
        "server": "https://10.0.0.10:6443",
        "certificate-authority": str(write(elsewhere / "ca.pem", identity.ca_pem)),
    }
    document["users"][0]["user"] = {
        "client-certificate": str(write(elsewhere / "client.pem", identity.cert_pem)),
        "client-key": str(write(elsewhere / "client-key.pem", identity.key_pem)),
    }
    return Layout(write_kubeconfig(tmp_path / "kube", document), None, identity)


def second_context(tmp_path: Path) -> Layout:
    """Three contexts (one token-only, the current one); --context picks the second certificate one."""
    current, wanted = issue_identity("first"), issue_identity("second")
    document = kubeconfig_document(current)
    document["clusters"].append({"name": "second-cluster", "cluster": embedded_cluster(wanted)})
    document["users"].extend(
        [
            {"name": "second-user", "user": embedded_user(wanted)},
            {"name": "token-user", "user": {"token": TOKEN}},
        ]
    )
    document["contexts"].extend(
        [
            {"name": "second", "context": {"cluster": "second-cluster", "user": "second-user"}},
            {"name": "token", "context": {"cluster": "ack-cluster", "user": "token-user"}},
        ]
    )
    return Layout(write_kubeconfig(tmp_path / "kube", document), "second", wanted)


LAYOUTS: dict[str, Callable[[Path], Layout]] = {
    "embedded": embedded,
    "relative-files": relative_files,
    "absolute-files": absolute_files,
    "second-context": second_context,
}


def assert_no_secret(text: str, identity: Identity) -> None:
    """Neither the key (PEM lines or base64) nor the token is in `text`."""
    for secret in [TOKEN, b64(identity.key_pem), *identity.key_lines]:
        assert secret not in text


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_prints_a_valid_tls_secret_with_the_contexts_material(
    tmp_path: Path, layout: Callable[[Path], Layout]
):
    """stdout is one strictly valid kubernetes.io/tls Secret of the three PEM values; stderr tells, safely."""
    made = layout(tmp_path)
    result = run_command(*secret_flags(made.kubeconfig, made.context), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (manifest,) = list(yaml.safe_load_all(result.stdout))
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    assert (
        manifest["kind"],
        manifest["type"],
        manifest["metadata"]["namespace"],
        manifest["metadata"]["name"],
    ) == (
        "Secret",
        "kubernetes.io/tls",
        NAMESPACE,
        SECRET_NAME,
    )
    decoded = {key: base64.b64decode(value) for key, value in manifest["data"].items()}
    assert decoded == dict(
        zip(SECRET_KEYS, [made.identity.ca_pem, made.identity.cert_pem, made.identity.key_pem], strict=True)
    )
    assert f'context "{made.context or "ack"}"' in result.stderr
    assert "client certificate: " in result.stderr
    assert 'groups "system:monitoring"' in result.stderr
    assert "valid until" in result.stderr
    assert "warning" not in result.stderr
    assert_no_secret(result.stderr, made.identity)


@pytest.mark.peer
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_data_is_what_kubectl_reads_from_the_kubeconfig(tmp_path: Path, layout: Callable[[Path], Layout]):
    """The Secret's values equal what `kubectl config view --flatten` embeds for the same context."""
    kubectl = require_tool("kubectl")
    made = layout(tmp_path)
    chosen = [f"--context={made.context}"] if made.context else []
    flags = ["--minify", "--flatten", "--raw", "-o", "json"]
    view = subprocess.run(
        [kubectl, "config", "view", f"--kubeconfig={made.kubeconfig}", *chosen, *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    flattened = json.loads(view.stdout)
    cluster, user = flattened["clusters"][0]["cluster"], flattened["users"][0]["user"]
    result = run_command(*secret_flags(made.kubeconfig, made.context), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["data"] == {
        "ca.crt": cluster["certificate-authority-data"],
        "tls.crt": user["client-certificate-data"],
        "tls.key": user["client-key-data"],
    }


@pytest.mark.peer
def test_manifest_is_the_secret_kubectl_would_create_from_the_files(tmp_path: Path):
    """kubectl's own Secret of the same three files has the same type, keys and values.

    (`kubectl create --dry-run=client -f -` of the output itself needs an API server with kubectl 1.20.)
    """
    kubectl = require_tool("kubectl")
    made = relative_files(tmp_path)
    folder = made.kubeconfig.parent
    files = {"ca.crt": folder / "pki" / "ca.crt", "tls.crt": folder / "pki" / "relay.crt"}
    files["tls.key"] = folder / "relay.key"
    from_files = [f"--from-file={key}={path}" for key, path in files.items()]
    offline = ["--type=kubernetes.io/tls", "--dry-run=client", "-o", "yaml"]
    created = subprocess.run(
        [
            kubectl,
            "create",
            "secret",
            "generic",
            SECRET_NAME,
            f"--namespace={NAMESPACE}",
            *from_files,
            *offline,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = yaml.safe_load(created.stdout)
    result = run_command(*secret_flags(made.kubeconfig), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ours = yaml.safe_load(result.stdout)
    assert (ours["type"], ours["data"]) == (theirs["type"], theirs["data"])
    assert {key: ours["metadata"][key] for key in ("name", "namespace")} == {
        key: theirs["metadata"][key] for key in ("name", "namespace")
    }


async def test_the_secret_mounted_as_files_serves_a_real_mtls_scrape(tmp_path: Path):
    """The Secret from a kubeconfig of a real mTLS upstream, written out as the kubelet mounts it, lets the
    relay scrape that upstream."""
    pki = Pki(tmp_path)
    identity = Identity(
        pki.server_ca.cert_pem.bytes(),
        pki.client_cert.cert_chain_pems[0].bytes(),
        pki.client_cert.private_key_pem.bytes(),
    )
    kubeconfig = write_kubeconfig(tmp_path / "kube", kubeconfig_document(identity))
    result = run_command(*secret_flags(kubeconfig), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    mounted = tmp_path / "mounted"
    for key, value in yaml.safe_load(result.stdout)["data"].items():
        write(mounted / key, base64.b64decode(value))
    files = ClientFiles(mounted / "ca.crt", mounted / "tls.crt", mounted / "tls.key")
    async with (
        running_upstream(pki.server_context(), body_handler(b"# TYPE up gauge\nup 1\n")) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        status, _, text = await request_text(f"{relay.base_url}/metrics")
    assert (status, text) == (200, "# TYPE up gauge\nup 1\n")


def test_a_certificate_expiring_soon_is_warned_of_on_stderr_only(tmp_path: Path):
    """A client certificate with two days left still gives the Secret, and a warning on stderr."""
    now = datetime.now(UTC)
    identity = issue_identity(not_before=now - timedelta(days=30), not_after=now + timedelta(days=2, hours=1))
    kubeconfig = write_kubeconfig(tmp_path, kubeconfig_document(identity))
    result = run_command(*secret_flags(kubeconfig), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: the client certificate expires at" in result.stderr
    assert "in 2 days" in result.stderr
    assert yaml.safe_load(result.stdout)["kind"] == "Secret"


def token_only(tmp_path: Path) -> Path:
    """A kubeconfig whose only user has a token."""
    document = kubeconfig_document(issue_identity())
    document["users"][0]["user"] = {"token": TOKEN}
    return write_kubeconfig(tmp_path, document)


def missing_relative_file(tmp_path: Path) -> Path:
    """A kubeconfig naming a client key that is not beside it."""
    document = kubeconfig_document(issue_identity())
    del document["users"][0]["user"]["client-key-data"]
    document["users"][0]["user"]["client-key"] = "keys/relay.key"
    return write_kubeconfig(tmp_path / "kube", document)


FAILURES: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "no-such-file": (lambda tmp: tmp / "absent", ["absent: no such file", "--kubeconfig"]),
    "a-folder": (lambda tmp: tmp, ["cannot read the kubeconfig: Is a directory"]),
    "not-utf8": (lambda tmp: write(tmp / "config", b"\xff\xfe binary"), ["the file is not UTF-8 text"]),
    "not-yaml": (lambda tmp: write(tmp / "config", b"users: [\n"), ["not YAML at line"]),
    "token-only-user": (
        token_only,
        ["authenticates with a token", "needs a client certificate", "ACK console"],
    ),
    "missing-relative-file": (
        missing_relative_file,
        ["kube/keys/relay.key (relative to the kubeconfig's folder", "which does not exist"],
    ),
}


@pytest.mark.parametrize(("make", "expected"), FAILURES.values(), ids=FAILURES.keys())
def test_failures_exit_1_with_the_cause_and_nothing_on_stdout(
    tmp_path: Path, make: Callable[[Path], Path], expected: list[str]
):
    """Each unusable kubeconfig exits 1 with one message naming the cause; stdout stays empty."""
    result = run_command(*secret_flags(make(tmp_path)), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(PREFIX), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for fragment in expected:
        assert fragment in result.stderr
    assert TOKEN not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--namespace=monitoring", f"--name={SECRET_NAME}"], "--kubeconfig"),
        (["--kubeconfig=config", f"--name={SECRET_NAME}"], "--namespace"),
        (["--kubeconfig=config", "--namespace=Monitoring", f"--name={SECRET_NAME}"], "not a valid namespace"),
        (["--kubeconfig=config", "--namespace=monitoring", "--name=client_tls"], "not a valid Secret name"),
    ],
    ids=["no-kubeconfig", "no-namespace", "upper-case-namespace", "underscore-in-name"],
)
def test_flags_are_checked_before_anything_is_read(tmp_path: Path, arguments: list[str], expected: str):
    """A missing flag or a name Kubernetes would refuse is a usage error (exit 2) naming the problem."""
    result = run_command(*arguments, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert expected in result.stderr
