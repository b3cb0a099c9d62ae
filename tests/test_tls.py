"""Client credentials from files (generated certificates): checks, facts, rotation, a live relay's use."""

from __future__ import annotations

import logging
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.config import UpstreamConfig, parse
from relay.errors import ClientTLSMaterialError
from relay.tls import CredentialSource, check_all, setting_line, shown_path
from tests.support import (
    ClientFiles,
    Pki,
    body_handler,
    certificate_with_a_broken_key,
    config_yaml,
    request_text,
    running_relay,
    running_upstream,
    write_encrypted_key,
    write_other_key,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def upstream_for(files: ClientFiles, extra: str = "", base_dir: Path = Path("/")) -> UpstreamConfig:
    """The one upstream of a configuration naming these client files."""
    return parse(config_yaml("https://h/m", files, extra), source="r.yml", base_dir=base_dir).upstreams[0]


def dated_pair(pki: Pki, name: str, not_before: datetime, not_after: datetime) -> ClientFiles:
    """Client files whose certificate is valid from `not_before` to `not_after`."""
    cert = pki.client_ca.issue_cert(f"{name}@test", not_before=not_before, not_after=not_after)
    return pki.client_files(name, cert)


def self_signed_ca_pem(common_name: str, not_after: datetime) -> bytes:
    """A CA certificate that expires at `not_after`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=3650))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_good_files_give_no_problem_and_their_facts(pki):
    """Readable, matching, valid files load without a problem, with the certificate's and the CA's dates."""
    checked = check_all(upstream_for(pki.client_files()), NOW)
    assert checked.problems == ()
    assert checked.credentials is not None
    certificate = checked.credentials.certificate
    assert certificate is not None
    assert (certificate.not_before, certificate.not_after) == (
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(3000, 1, 1, tzinfo=UTC),
    )
    assert checked.credentials.ca_not_after == datetime(3000, 1, 1, tzinfo=UTC)


def test_ca_expiry_is_the_earliest_in_the_bundle(pki):
    """With several CAs in ca_file, the CA expiry fact is the first of them to expire."""
    files = pki.client_files()
    soon, later = datetime(2027, 3, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
    files.ca_file.write_bytes(
        self_signed_ca_pem("later", later) + files.ca_file.read_bytes() + self_signed_ca_pem("soon", soon)
    )
    credentials = CredentialSource(upstream_for(files)).current()
    assert credentials.ca_not_after == soon


def test_no_ca_file_means_no_ca_expiry(pki):
    """Without ca_file (the system's CAs) there is no CA expiry to report."""
    upstream = parse(config_yaml("https://h/m"), source="r.yml", base_dir=Path("/")).upstreams[0]
    assert CredentialSource(upstream).current().ca_not_after is None


@pytest.mark.parametrize(
    ("not_before", "not_after", "message"),
    [
        (
            datetime(2020, 1, 1, tzinfo=UTC),
            datetime(2026, 5, 31, 12, tzinfo=UTC),
            "the client certificate expired at 2026-05-31T12:00:00Z",
        ),
        (
            datetime(2026, 6, 2, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
            "the client certificate is not valid before 2026-06-02T00:00:00Z",
        ),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_a_certificate_outside_its_validity_is_a_validity_problem(pki, not_before, not_after, message):
    """An expired or not yet valid certificate is a problem marked as one of validity; the set still loads
    (start-up goes on with it)."""
    checked = check_all(upstream_for(dated_pair(pki, "dated", not_before, not_after)), NOW)
    assert [(problem.setting, problem.message, problem.validity) for problem in checked.problems] == [
        ("tls_config.cert_file", message, True)
    ]
    assert checked.credentials is not None


def test_every_unreadable_file_is_its_own_problem(tmp_path):
    """Four missing files (CA, certificate, key, token) are four problems in one check."""
    missing = ClientFiles(*(tmp_path / name for name in ("ca.crt", "tls.crt", "tls.key")))
    checked = check_all(upstream_for(missing, f"    bearer_token_file: {tmp_path / 'token'}\n"), NOW)
    assert [(problem.setting, problem.message) for problem in checked.problems] == [
        ("tls_config.ca_file", "cannot read: No such file or directory"),
        ("tls_config.cert_file", "cannot read: No such file or directory"),
        ("tls_config.key_file", "cannot read: No such file or directory"),
        ("bearer_token_file", "cannot read: No such file or directory"),
    ]
    assert checked.credentials is None


def test_a_key_of_another_certificate_is_a_problem(pki):
    """A key that is not the certificate's is refused by name."""
    files = pki.client_files()
    write_other_key(files.key_file)
    checked = check_all(upstream_for(files), NOW)
    assert [(problem.setting, problem.message) for problem in checked.problems] == [
        ("tls_config.key_file", "the key does not match tls_config.cert_file")
    ]


def test_paths_are_shown_as_written_and_as_resolved(pki, tmp_path):
    """A relative path shows as written and resolved; an absolute one once; each setting has its line."""
    files = pki.client_files()
    text = (
        "upstreams:\n  - name: a\n    url: https://h/m\n    tls_config:\n      ca_file: client/ca.crt\n"
        f"      cert_file: {files.cert_file}\n      key_file: client/tls.key\n    bearer_token_file: token\n"
    )
    upstream = parse(text, source="r.yml", base_dir=tmp_path).upstreams[0]
    assert shown_path(upstream, "tls_config.ca_file") == f'"client/ca.crt" ({tmp_path}/client/ca.crt)'
    assert shown_path(upstream, "tls_config.cert_file") == f'"{files.cert_file}"'
    assert shown_path(upstream, "bearer_token_file") == f'"token" ({tmp_path}/token)'
    assert shown_path(upstream, "tls_config") == ""
    lines = {setting: setting_line(upstream, setting) for setting in ("tls_config.key_file", "tls_config")}
    assert lines == {"tls_config.key_file": 7, "tls_config": 4}
    assert setting_line(upstream, "bearer_token_file") == 8


def test_loaded_at_and_refused_follow_rotation(pki):
    """loaded_at is the time of the last set taken; a refused rotation sets `refused` and keeps the last good
    set; a good rotation clears it and moves loaded_at."""
    files = pki.client_files()
    source = CredentialSource(upstream_for(files))
    assert (source.loaded_at, source.refused) == (None, None)
    before = time.time()
    good = source.current()
    first_load = source.loaded_at
    assert first_load is not None
    assert before <= first_load <= time.time()
    assert source.current() is good
    assert source.loaded_at == first_load  # the same files: nothing was loaded again

    write_other_key(files.key_file)
    assert source.current() is good
    assert source.refused is not None
    assert (source.refused.field, source.refused.problem) == (
        "tls_config.key_file",
        "the key does not match tls_config.cert_file",
    )
    assert source.loaded_at == first_load

    renewed = pki.client_ca.issue_cert("renewed@test")
    renewed.cert_chain_pems[0].write_to_path(str(files.cert_file))
    renewed.private_key_pem.write_to_path(str(files.key_file))
    replacement = source.current()
    assert replacement is not good
    assert source.refused is None
    assert source.loaded_at is not None
    assert source.loaded_at >= first_load


def test_a_rotation_to_an_expired_certificate_is_refused(pki, caplog):
    """An expired certificate rotated in is refused and named; the first set of a start-up is taken even if
    expired (the relay serves and says what is wrong), with a warning in the log."""
    files = pki.client_files()
    source = CredentialSource(upstream_for(files))
    good = source.current()
    expired = dated_pair(pki, "expired", datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC))
    for written, path in ((expired.cert_file, files.cert_file), (expired.key_file, files.key_file)):
        path.write_bytes(written.read_bytes())
    assert source.current() is good
    assert source.refused is not None
    assert source.refused.problem == "the client certificate expired at 2021-01-01T00:00:00Z"

    at_start = CredentialSource(upstream_for(expired))
    caplog.clear()  # the refusal above was logged too
    with caplog.at_level(logging.WARNING, logger="relay.tls"):
        assert at_start.current().certificate is not None
    assert at_start.refused is None
    (warning,) = caplog.records
    assert warning.getMessage() == (
        "using a client certificate outside its validity period; the upstream will likely refuse it"
    )
    assert warning.__dict__["error"] == "the client certificate expired at 2021-01-01T00:00:00Z"


def test_ca_file_replaces_the_system_cas(pki):
    """With ca_file set, only that CA vouches for the upstream: public CAs are not trusted too."""
    context = CredentialSource(upstream_for(pki.client_files())).current().ssl_context
    assert context is not None
    assert context.cert_store_stats()["x509_ca"] == 1
    upstream = parse(config_yaml("https://h/m"), source="r.yml", base_dir=Path("/")).upstreams[0]
    system = CredentialSource(upstream).current().ssl_context
    assert system is not None
    assert context.verify_mode == system.verify_mode == ssl.CERT_REQUIRED


def test_a_certificate_with_an_unreadable_key_is_a_located_problem(pki):
    """A certificate whose public key cannot be read is refused by name, and never replaces a good set."""
    files = pki.client_files()
    upstream = upstream_for(files)
    source = CredentialSource(upstream)
    good = source.current()
    files.cert_file.write_bytes(certificate_with_a_broken_key(pki.client_cert))
    assert source.current() is good
    with pytest.raises(ClientTLSMaterialError, match="public key cannot be read"):
        CredentialSource(upstream).current()


# --- credentials as a live relay uses them ------------------------------------------------------------

BODY = b"# TYPE up gauge\nup 1\n"


def remove_cert_file(files: ClientFiles) -> None:
    files.cert_file.unlink()


def write_garbage_cert_file(files: ClientFiles) -> None:
    files.cert_file.write_text("not a certificate")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda files: write_other_key(files.key_file),
            "tls_config.key_file: the key does not match tls_config.cert_file",
        ),
        (
            lambda files: write_encrypted_key(files.key_file),
            "tls_config.key_file: the key is encrypted; the relay never prompts for a passphrase",
        ),
        (remove_cert_file, "tls_config.cert_file: cannot read"),
        (write_garbage_cert_file, "tls_config.cert_file: not a PEM certificate"),
    ],
    ids=["mismatched", "encrypted", "missing", "garbage"],
)
async def test_unusable_client_files_give_502_and_stay_ready(pki, tmp_path, breakage, message):
    """Broken credential files at start: scrapes are 502s naming the file, yet the relay stays ready and its
    own metrics (where one alerts from) say what is wrong."""
    files = pki.client_files()
    breakage(files)
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        status, _, text = await request_text(f"{relay.base_url}/metrics")
        ready = await request_text(f"{relay.base_url}/-/ready")
        own = await request_text(f"{relay.base_url}/relay/metrics")
    assert status == 502
    assert message in text
    assert "BEGIN" not in text
    assert ready[0] == 200
    assert 'metrics_relay_scrape_failures_total{reason="client_tls",upstream="test"} 1.0' in own[2]
    assert 'metrics_relay_upstream_up{upstream="test"} 0.0' in own[2]
    assert upstream.requests == []


async def echo_client_serial(request: web.Request) -> web.StreamResponse:
    """An upstream answer naming the serial number of the client certificate on this connection."""
    assert request.transport is not None
    serial = request.transport.get_extra_info("peercert")["serialNumber"]
    return web.Response(text=f'client_certificate_info{{serial="{int(serial, 16)}"}} 1\n')


def serial_line(cert: trustme.LeafCert) -> str:
    """What echo_client_serial answers for a connection made with `cert`."""
    serial = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).serial_number
    return f'client_certificate_info{{serial="{serial}"}} 1\n'


async def test_rotated_credentials_are_used_and_broken_ones_are_not(pki, tmp_path):
    """New files are used on the next scrape without restart; a broken new set keeps the last good one."""
    files = pki.client_files()
    async with (
        running_upstream(pki.server_context(), echo_client_serial) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        assert (await request_text(f"{relay.base_url}/metrics"))[2] == serial_line(pki.client_cert)

        write_other_key(files.key_file)  # a broken rotation: key and certificate disagree
        assert (await request_text(f"{relay.base_url}/metrics"))[2] == serial_line(pki.client_cert)

        renewed = pki.client_ca.issue_cert("renewed@test")
        renewed.cert_chain_pems[0].write_to_path(str(files.cert_file))
        renewed.private_key_pem.write_to_path(str(files.key_file))
        assert (await request_text(f"{relay.base_url}/metrics"))[2] == serial_line(renewed)
