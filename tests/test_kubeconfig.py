"""The pure kubeconfig reader: contexts, embedded and referenced material, checks, and every refusal."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay.kubeconfig import KubeconfigError, SecretMaterial, secret_material

SERVER = "https://10.0.0.10:6443"
BASE_DIR = Path("/kube")  # never touched: the reader under test serves files from memory
TOKEN = "eyJhbGciOiJSUzI1NiJ9.secret-token-value"
PASSWORD = "hunter2-secret-password"

Document = dict[str, Any]


@dataclass(frozen=True)
class Identity:
    """A CA and a client certificate it issued, as PEM."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def key_lines(self) -> list[str]:
        """The key's base64 body lines: none may show up in any message."""
        return [line for line in self.key_pem.decode().splitlines() if line and not line.startswith("-----")]


def issue_identity(
    common_name: str = "metrics-relay",
    group: str = "system:monitoring",
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Identity:
    """A fresh CA and a client certificate for `common_name` in `group`, valid as given."""
    ca = trustme.CA()
    leaf = ca.issue_cert(
        common_name=common_name, organization_name=group, not_before=not_before, not_after=not_after
    )
    return Identity(ca.cert_pem.bytes(), leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())


def b64(data: bytes) -> str:
    """What kubeconfigs hold in a `*-data` field."""
    return base64.b64encode(data).decode("ascii")


def embedded_user(identity: Identity) -> dict[str, str]:
    """A kubeconfig user with the client certificate and key inline."""
    return {"client-certificate-data": b64(identity.cert_pem), "client-key-data": b64(identity.key_pem)}


def embedded_cluster(identity: Identity) -> dict[str, Any]:
    """A kubeconfig cluster with the CA inline."""
    return {"server": SERVER, "certificate-authority-data": b64(identity.ca_pem)}


def kubeconfig_document(identity: Identity) -> Document:
    """An ACK-style kubeconfig: one cluster, one user, one context (the current one), all inline."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ack-cluster", "cluster": embedded_cluster(identity)}],
        "users": [{"name": "ack-user", "user": embedded_user(identity)}],
        "contexts": [{"name": "ack", "context": {"cluster": "ack-cluster", "user": "ack-user"}}],
        "current-context": "ack",
    }


class MemoryFiles:
    """A ReadFile serving files from memory, and failing the way the file system does."""

    def __init__(self, files: dict[Path, bytes], unreadable: tuple[Path, ...] = ()) -> None:
        self.files = files
        self.unreadable = unreadable
        self.read: list[Path] = []

    def __call__(self, path: Path) -> bytes:
        self.read.append(path)
        if path in self.unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        if path not in self.files:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return self.files[path]


def read(
    document: Document | str, files: MemoryFiles | None = None, context: str | None = None
) -> SecretMaterial:
    """secret_material of a kubeconfig given as a document (dumped to YAML) or as text."""
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    return secret_material(
        text, source="kubeconfig.yaml", base_dir=BASE_DIR, read_file=files or MemoryFiles({}), context=context
    )


@pytest.fixture(scope="module")
def identity() -> Identity:
    """One CA and client certificate for the module's kubeconfigs."""
    return issue_identity()


# --- what is read ----------------------------------------------------------------------------------


def test_embedded_material_of_the_current_context(identity: Identity):
    """Inline data of the current context gives the three PEM values and the certificate's identity."""
    material = read(kubeconfig_document(identity))
    assert (material.ca_crt, material.tls_crt, material.tls_key) == (
        identity.ca_pem,
        identity.cert_pem,
        identity.key_pem,
    )
    assert (material.context, material.cluster, material.user, material.server) == (
        "ack",
        "ack-cluster",
        "ack-user",
        SERVER,
    )
    assert (material.client_certificate.user, material.client_certificate.groups) == (
        "metrics-relay",
        ("system:monitoring",),
    )
    assert material.data() == {
        "ca.crt": b64(identity.ca_pem),
        "tls.crt": b64(identity.cert_pem),
        "tls.key": b64(identity.key_pem),
    }
    assert identity.key_pem.decode() not in repr(material)


@pytest.mark.parametrize(
    ("ca_path", "cert_path", "key_path", "expected"),
    [
        (
            "ca.crt",
            "tls/client.crt",
            "./tls/client.key",
            ("/kube/ca.crt", "/kube/tls/client.crt", "/kube/tls/client.key"),
        ),
        (
            "../pki/ca.crt",
            "client.crt",
            "client.key",
            ("/pki/ca.crt", "/kube/client.crt", "/kube/client.key"),
        ),
        (
            "/etc/pki/ca.crt",
            "/etc/pki/c.crt",
            "/etc/pki/c.key",
            ("/etc/pki/ca.crt", "/etc/pki/c.crt", "/etc/pki/c.key"),
        ),
    ],
    ids=["relative", "relative-upwards-cleaned-as-go-does", "absolute"],
)
def test_referenced_files_resolve_against_the_kubeconfigs_folder(
    identity: Identity, ca_path: str, cert_path: str, key_path: str, expected: tuple[str, str, str]
):
    """certificate-authority, client-certificate and client-key files: relative to the kubeconfig's folder."""
    document = kubeconfig_document(identity)
    document["clusters"][0]["cluster"] = {"server": SERVER, "certificate-authority": ca_path}
    document["users"][0]["user"] = {"client-certificate": cert_path, "client-key": key_path}
    contents = (identity.ca_pem, identity.cert_pem, identity.key_pem)
    files = MemoryFiles({Path(path): content for path, content in zip(expected, contents, strict=True)})
    material = read(document, files)
    assert (material.ca_crt, material.tls_crt, material.tls_key) == contents
    assert sorted(files.read) == sorted(Path(path) for path in expected)


def test_context_flag_picks_another_context_with_its_own_user(identity: Identity):
    """--context chooses among several contexts; the current one is only the default."""
    other = issue_identity("second-relay", "system:second")
    document = kubeconfig_document(identity)
    document["clusters"].append({"name": "second-cluster", "cluster": embedded_cluster(other)})
    document["users"].append({"name": "second-user", "user": embedded_user(other)})
    document["contexts"].append(
        {"name": "second", "context": {"cluster": "second-cluster", "user": "second-user"}}
    )
    chosen = read(document, context="second")
    assert (chosen.context, chosen.tls_crt, chosen.ca_crt) == ("second", other.cert_pem, other.ca_pem)
    assert chosen.client_certificate.user == "second-relay"
    assert read(document).tls_crt == identity.cert_pem


@pytest.mark.parametrize(
    ("user_extra", "cluster_extra", "note"),
    [
        ({"token": TOKEN}, {}, None),
        (
            {"exec": {"command": "ack-ram-tool", "apiVersion": "client.authentication.k8s.io/v1beta1"}},
            {},
            None,
        ),
        ({}, {"insecure-skip-tls-verify": True}, "insecure-skip-tls-verify"),
        ({}, {"tls-server-name": "kubernetes"}, None),
    ],
    ids=["token-beside-certificate", "exec-beside-certificate", "skip-verify-with-a-ca", "tls-server-name"],
)
def test_a_client_certificate_serves_whatever_else_is_set(
    identity: Identity, user_extra: dict[str, Any], cluster_extra: dict[str, Any], note: str | None
):
    """A user with a certificate and a token or plugin too, or a cluster with other settings, still serves."""
    document = kubeconfig_document(identity)
    document["users"][0]["user"].update(user_extra)
    document["clusters"][0]["cluster"].update(cluster_extra)
    material = read(document)
    assert material.tls_key == identity.key_pem
    assert [note in each for each in material.notes] == ([True] if note else [])


def test_base64_broken_over_lines_is_read_as_kubectl_reads_it(identity: Identity):
    """Line breaks inside a `*-data` value are ignored, as Go's base64 decoder does for kubectl."""
    document = kubeconfig_document(identity)
    data = b64(identity.cert_pem)
    folded = "\n".join(data[start : start + 64] for start in range(0, len(data), 64))
    document["users"][0]["user"]["client-certificate-data"] = folded
    assert read(document).tls_crt == identity.cert_pem


# --- expiry ------------------------------------------------------------------------------------------

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("not_before", "not_after", "expected"),
    [
        (NOW - timedelta(days=10), NOW + timedelta(days=300), []),
        (NOW - timedelta(days=10), NOW + timedelta(days=3), ["expires at 2026-06-04T00:00:00Z, in 3 days"]),
        (NOW - timedelta(days=10), NOW + timedelta(hours=20), ["in 20 hours"]),
        (NOW - timedelta(days=10), NOW - timedelta(days=1), ["expired at 2026-05-31T00:00:00Z"]),
        (NOW + timedelta(days=1), NOW + timedelta(days=300), ["not valid before 2026-06-02T00:00:00Z"]),
    ],
    ids=["valid", "within-a-week", "within-a-day", "expired", "not-yet-valid"],
)
def test_expiry_warnings(not_before: datetime, not_after: datetime, expected: list[str]):
    """A client certificate expired, not yet valid or expiring within 7 days gets one warning saying so."""
    identity = issue_identity(not_before=not_before, not_after=not_after)
    warnings = read(kubeconfig_document(identity)).warnings(NOW)
    assert len(warnings) == len(expected), warnings
    for warning, fragment in zip(warnings, expected, strict=True):
        assert fragment in warning


# --- refusals ----------------------------------------------------------------------------------------

Change = Callable[[Document, Identity], None]


def set_user(**fields: Any) -> Change:
    """Replace the user's body with `fields` (underscores stand for dashes)."""
    body = {key.replace("_", "-"): value for key, value in fields.items()}

    def change(document: Document, _identity: Identity) -> None:
        document["users"][0]["user"] = copy.deepcopy(body)

    return change


def update(section: str, **fields: Any) -> Change:
    """Set `fields` (underscores stand for dashes; None removes) in the first entry of `section`."""
    body_key = section.removesuffix("s")

    def change(document: Document, _identity: Identity) -> None:
        body = document[section][0][body_key]
        for key, value in fields.items():
            if value is None:
                body.pop(key.replace("_", "-"), None)
            else:
                body[key.replace("_", "-")] = value

    return change


def replace_document(text: str) -> Change:
    """The whole kubeconfig replaced by `text` (read as YAML by the test)."""

    def change(document: Document, _identity: Identity) -> None:
        document.clear()
        document["__text__"] = text

    return change


def top(**fields: Any) -> Change:
    """Set (or with None remove) top-level fields of the kubeconfig (underscores stand for dashes)."""

    def change(document: Document, _identity: Identity) -> None:
        for key, value in fields.items():
            if value is None:
                document.pop(key.replace("_", "-"), None)
            else:
                document[key.replace("_", "-")] = value

    return change


def add_token_context(document: Document, identity: Identity) -> None:
    """A second context whose user has only a token, made the current one."""
    document["users"].append({"name": "token-user", "user": {"token": TOKEN}})
    document["contexts"].append(
        {"name": "token", "context": {"cluster": "ack-cluster", "user": "token-user"}}
    )
    document["current-context"] = "token"


def user_cert_from_elsewhere(document: Document, _identity: Identity) -> None:
    """The client certificate of another key pair beside this key."""
    document["users"][0]["user"]["client-certificate-data"] = b64(issue_identity().cert_pem)


def encrypted_key(document: Document, identity: Identity) -> None:
    """The client key encrypted with a passphrase."""
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    document["users"][0]["user"]["client-key-data"] = b64(pem)


def server_only_certificate(document: Document, _identity: Identity) -> None:
    """A self-signed certificate and its key, whose extended key usage is TLS server authentication only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    document["users"][0]["user"] = {
        "client-certificate-data": b64(certificate.public_bytes(serialization.Encoding.PEM)),
        "client-key-data": b64(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        ),
    }


def duplicate_context(document: Document, _identity: Identity) -> None:
    """Two contexts of the same name."""
    document["contexts"].append(copy.deepcopy(document["contexts"][0]))


def key_in_a_broken_line(document: Document, identity: Identity) -> None:
    """YAML broken on the line that holds the key's data (PyYAML's own message would quote that line)."""
    text = yaml.safe_dump(document).replace("client-key-data: ", "client-key-data: @", 1)
    replace_document(text)(document, identity)


REFUSALS: list[tuple[str, Change, str | None, list[str]]] = [
    ("not-yaml", replace_document("clusters: [\n  - name: x\n"), None, ["not YAML at line", "column"]),
    ("key-in-the-broken-line", key_in_a_broken_line, None, ["not YAML at line", "cannot start any token"]),
    ("not-a-mapping", replace_document("- a\n- b\n"), None, ["not a kubeconfig"]),
    ("a-secret-manifest", top(kind="Secret"), None, ['its kind is "Secret", not Config']),
    ("contexts-not-a-list", top(contexts={"ack": {}}), None, ["contexts must be a list"]),
    ("duplicate-context", duplicate_context, None, ['a second entry is called "ack"']),
    ("no-current-context", top(current_context=None), None, ["no current-context", "--context", '"ack"']),
    ("unknown-context-flag", top(), "staging", ['--context names context "staging"', 'contexts: "ack"']),
    ("unknown-current-context", top(current_context="gone"), None, ['current-context names context "gone"']),
    ("context-without-cluster", update("contexts", cluster=None), None, ['context "ack" names no cluster']),
    ("context-without-user", update("contexts", user=None), None, ["names no user", '"ack-user"']),
    ("context-names-missing-user", update("contexts", user="nobody"), None, ['user "nobody", which']),
    (
        "token-only-user",
        set_user(token=TOKEN),
        None,
        ["authenticates with a token", "needs a client certificate", "ACK console"],
    ),
    ("token-file-user", set_user(tokenFile="/var/run/token"), None, ["authenticates with a token"]),
    (
        "exec-user",
        set_user(exec={"command": "ack-ram-tool", "args": ["--secret", TOKEN]}),
        None,
        ["authenticates with an exec plugin", "download the kubeconfig with a client certificate"],
    ),
    (
        "auth-provider-user",
        set_user(auth_provider={"name": "oidc", "config": {"id-token": TOKEN}}),
        None,
        ["auth-provider plugin"],
    ),
    ("password-user", set_user(username="admin", password=PASSWORD), None, ["a username and password"]),
    ("empty-user", set_user(), None, ["it has no credentials"]),
    (
        "token-context-among-certificate-ones",
        add_token_context,
        None,
        ['user "token-user"', 'contexts here whose user has one: "ack"'],
    ),
    (
        "certificate-without-key",
        update("users", client_key_data=None),
        None,
        ["no client-key-data or client-key"],
    ),
    (
        "key-without-certificate",
        update("users", client_certificate_data=None),
        None,
        ["has client-key(-data) but no client-certificate"],
    ),
    (
        "skip-verify-without-ca",
        update("clusters", certificate_authority_data=None, insecure_skip_tls_verify=True),
        None,
        ["insecure-skip-tls-verify", "no CA for ca.crt", "tls_config.insecure_skip_verify: true"],
    ),
    ("no-ca", update("clusters", certificate_authority_data=None), None, ["no certificate-authority-data"]),
    (
        "ca-data-and-file",
        update("clusters", certificate_authority="ca.crt"),
        None,
        ["sets both certificate-authority-data and certificate-authority"],
    ),
    (
        "certificate-data-and-file",
        update("users", client_certificate="tls.crt"),
        None,
        ['user "ack-user" (context "ack") sets both client-certificate-data and client-certificate'],
    ),
    (
        "invalid-base64",
        update("users", client_key_data="LS0t*not base64*"),
        None,
        ["client-key-data is not valid base64"],
    ),
    ("data-not-a-string", update("users", client_key_data=12345), None, ["must be a base64 string"]),
    (
        "certificate-not-pem",
        update("users", client_certificate_data=b64(b"junk")),
        None,
        ["not a PEM certificate"],
    ),
    (
        "ca-not-pem",
        update("clusters", certificate_authority_data=b64(b"junk")),
        None,
        ["certificate-authority(-data) holds no PEM certificate"],
    ),
    ("key-not-pem", update("users", client_key_data=b64(b"junk")), None, ["not a PEM private key"]),
    (
        "key-of-another-certificate",
        user_cert_from_elsewhere,
        None,
        ["does not belong to the client certificate"],
    ),
    ("encrypted-key", encrypted_key, None, ["the client key is encrypted"]),
    ("server-only-certificate", server_only_certificate, None, ["does not include client authentication"]),
    (
        "missing-relative-file",
        update("clusters", certificate_authority_data=None, certificate_authority="pki/ca.crt"),
        None,
        ["/kube/pki/ca.crt (relative to the kubeconfig's folder /kube), which does not exist"],
    ),
    (
        "missing-absolute-file",
        update("users", client_key_data=None, client_key="/etc/nowhere.key"),
        None,
        ["client-key names /etc/nowhere.key, which does not exist"],
    ),
    (
        "unreadable-file",
        update("users", client_key_data=None, client_key="/kube/unreadable.key"),
        None,
        ["/kube/unreadable.key, which cannot be read: Permission denied"],
    ),
]


@pytest.mark.parametrize(
    ("change", "context", "expected"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refusals_name_the_cause_and_never_the_secrets(
    identity: Identity, change: Change, context: str | None, expected: list[str]
):
    """Each unusable kubeconfig gets a KubeconfigError naming the kubeconfig and the cause, no secret."""
    document = kubeconfig_document(identity)
    change(document, identity)
    text = document.pop("__text__", None) or yaml.safe_dump(document)
    files = MemoryFiles({}, unreadable=(Path("/kube/unreadable.key"),))
    with pytest.raises(KubeconfigError) as caught:
        read(text, files, context=context)
    message = str(caught.value)
    assert message.startswith("kubeconfig.yaml: "), message
    for fragment in expected:
        assert fragment in message, message
    for secret in [TOKEN, PASSWORD, b64(identity.key_pem), *identity.key_lines]:
        assert secret not in message
