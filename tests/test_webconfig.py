"""The web configuration file in exporter-toolkit's format: what it accepts, and every problem it names."""

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest
import trustme

from relay.errors import ConfigError
from relay.webconfig import WebConfig, parse_web_config

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def pems(tmp_path: Path) -> Path:
    """A folder with a server certificate, its key and a client CA, as the file names the tests use."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return tmp_path


def parse(text: str, folder: Path) -> WebConfig:
    return parse_web_config(text, source="web.yml", base_dir=folder, read_file=Path.read_bytes)


def test_an_empty_file_is_plain_http_without_auth(tmp_path):
    """No keys at all: nothing to protect with, as exporter-toolkit treats it."""
    assert parse("", tmp_path) == WebConfig()


def test_a_full_file_is_read_as_exporter_toolkit_means_it(pems):
    """Certificates, client policy, versions, ciphers, curve, headers and users all arrive."""
    config = parse(
        f"""
tls_server_config:
  cert_file: tls.crt
  key_file: tls.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  client_allowed_sans: [prometheus.monitoring.svc]
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [CurveP384]
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: {HASH}
""",
        pems,
    )
    tls = config.tls
    assert tls is not None
    assert tls.cert_pem == (pems / "tls.crt").read_bytes()
    assert tls.client_auth == ssl.CERT_REQUIRED
    assert tls.client_allowed_sans == ("prometheus.monitoring.svc",)
    assert (tls.min_version, tls.max_version) == (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)
    assert tls.ciphers == ("ECDHE-RSA-AES128-GCM-SHA256",)  # TLS 1.3 suites are always on
    assert (tls.prefer_server_ciphers, tls.curve) == (False, "secp384r1")
    assert config.headers == (("X-Frame-Options", "deny"), ("Strict-Transport-Security", "max-age=31536000"))
    assert config.users == (("prometheus", HASH.encode()),)
    assert set(config.files) == {pems / "tls.crt", pems / "tls.key", pems / "ca.crt"}


def test_inline_pem_is_taken_as_well(pems):
    """`cert`, `key` and `client_ca` carry the PEM text itself, as newer exporter-toolkit allows."""
    cert = (pems / "tls.crt").read_text()
    key = (pems / "tls.key").read_text()
    indent = "\n    "
    config = parse(
        f"tls_server_config:\n  cert: |{indent}{indent.join(cert.splitlines())}\n"
        f"  key: |{indent}{indent.join(key.splitlines())}\n",
        pems,
    )
    assert config.tls is not None
    assert config.tls.cert_pem.strip() == cert.strip().encode()
    assert config.files == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n",
            "web.yml:2: tls_server_config: needs key_file (or key) too",
            id="cert-without-key",
        ),
        pytest.param(
            "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n",
            "web.yml:2: tls_server_config: needs cert_file and key_file (or cert and key) for TLS",
            id="policy-without-certificate",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: tls.key\n",
            "web.yml:2: tls_server_config.cert_file: cannot read {folder}/missing.crt: No such file or "
            "directory",
            id="unreadable-file",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  cert: x\n  key_file: tls.key\n",
            "web.yml:2: tls_server_config.cert_file: give cert or cert_file, not both",
            id="inline-and-file",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_auth_type: "
            "RequireAnyClientCert\n",
            "web.yml:4: tls_server_config.client_auth_type: RequireAnyClientCert is not supported: "
            "Python's ssl "
            "module verifies every client certificate it asks for; use VerifyClientCertIfGiven or "
            "RequireAndVerifyClientCert",
            id="unverified-client-auth",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_auth_type: Maybe\n",
            "web.yml:4: tls_server_config.client_auth_type: unknown client_auth_type 'Maybe' (use one of "
            "NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)",
            id="unknown-client-auth",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "web.yml:2: tls_server_config: client_auth_type verifies client certificates: it needs "
            "client_ca_file",
            id="verify-without-ca",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_ca_file: ca.crt\n",
            "web.yml:2: tls_server_config: client_ca_file is given but client_auth_type is NoClientCert: set "
            "client_auth_type: RequireAndVerifyClientCert to check client certificates",
            id="ca-without-policy",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_allowed_sans: [a]\n",
            "web.yml:4: tls_server_config.client_allowed_sans: needs client_auth_type: "
            "RequireAndVerifyClientCert "
            "(else a client may send no certificate)",
            id="sans-without-verification",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: SSL3\n",
            "web.yml:4: tls_server_config.min_version: unknown TLS version 'SSL3' (use one of TLS10, TLS11, "
            "TLS12, TLS13)",
            id="unknown-version",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: TLS13\n"
            "  max_version: TLS12\n",
            "web.yml:2: tls_server_config: min_version is above max_version",
            id="versions-crossed",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
            "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            "web.yml:4: tls_server_config.cipher_suites[0]: unknown or insecure cipher suite "
            "'TLS_RSA_WITH_RC4_128_SHA'",
            id="insecure-cipher",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
            "  curve_preferences: [X25519, CurveP256]\n",
            "web.yml:4: tls_server_config.curve_preferences: Python's ssl module takes one curve: give "
            "only the "
            "one to use",
            id="several-curves",
        ),
        pytest.param(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  curve_preferences: [X25519]\n",
            "web.yml:4: tls_server_config.curve_preferences: curve 'X25519' cannot be set from Python "
            "(use one "
            "of CurveP256, CurveP384, CurveP521)",
            id="x25519",
        ),
        pytest.param(
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "web.yml:3: http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin, not "
            "'allow'",
            id="frame-options",
        ),
        pytest.param(
            "http_server_config:\n  headers:\n    X-Powered-By: me\n",
            "web.yml:3: http_server_config.headers.X-Powered-By: unknown key (known keys: "
            "Content-Security-Policy, Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, "
            "X-XSS-Protection)",
            id="unknown-header",
        ),
        pytest.param(
            "basic_auth_users:\n  prometheus: plaintext-password\n",
            "web.yml:2: basic_auth_users.prometheus: is not a bcrypt hash ($2y$…, 60 characters): make "
            "one with "
            "`htpasswd -nBC 10 \"\" | tr -d ':\\n'`",
            id="not-bcrypt",
        ),
        pytest.param(
            f'basic_auth_users:\n  "a:b": {HASH}\n',
            "web.yml:2: basic_auth_users.a:b: a user name cannot hold ':' (basic auth splits at it)",
            id="colon-in-user",
        ),
        pytest.param(
            "rate_limit:\n  interval: 1s\n",
            "web.yml:2: rate_limit: not supported by the relay; --web.max-requests bounds the scrapes "
            "served at "
            "once",
            id="rate-limit",
        ),
        pytest.param(
            "tls_config:\n  cert_file: tls.crt\n",
            "web.yml:1: tls_config: unknown key; did you mean tls_server_config?",
            id="did-you-mean",
        ),
        pytest.param(
            "basic_auth_users: [a]\n",
            "web.yml:1: basic_auth_users: must be a mapping, not a list",
            id="users-not-a-mapping",
        ),
        pytest.param(
            "tls_server_config:\n cert_file: a\n  key_file: b\n",
            "web.yml:3: invalid YAML: mapping values are not allowed here (a ':' where no key can start: "
            "probably "
            "this line is indented deeper than the key before it, or a value holds ': ' and needs quotes)",
            id="indentation",
        ),
    ],
)
def test_every_problem_is_located_and_explained(pems, text, problem):
    """Each problem names the file, the line, the key and what to do; a secret value is never echoed."""
    with pytest.raises(ConfigError) as caught:
        parse(text, pems)
    assert str(caught.value) == problem.format(folder=pems)
    assert "plaintext-password" not in str(caught.value)


def test_every_problem_of_a_file_comes_in_one_run(pems):
    """Problems in TLS, headers and users are reported together, in line order."""
    text = (
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: SSL3\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n"
        "basic_auth_users:\n  prometheus: nope\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse(text, pems)
    assert [problem.line for problem in caught.value.problems] == [4, 7, 9]
