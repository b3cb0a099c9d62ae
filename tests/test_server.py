"""The relay's own endpoints, reload, readiness, and credential files that are broken or rotate."""

from __future__ import annotations

import base64
import datetime
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relay import pipeline
from relay.config import parse
from relay.errors import ClientTLSMaterialError
from relay.tls import CredentialSource
from tests.support import (
    ClientFiles,
    Pki,
    body_handler,
    config_yaml,
    require_tool,
    running_relay,
    running_upstream,
)

BODY = b"# TYPE up gauge\nup 1\n"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def get(url: str, method: str = "GET", **headers: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_health_ready_and_self_metrics(pki, tmp_path):
    """/-/healthy and /-/ready answer 200, and /relay/metrics shows build info and per-reason counters."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        assert (await get(f"{relay.base_url}/-/healthy"))[0] == 200
        assert (await get(f"{relay.base_url}/-/ready"))[0] == 200
        status, content_type, text = await get(f"{relay.base_url}/relay/metrics")
        relay.runtime.shutting_down = True
        assert (await get(f"{relay.base_url}/-/ready"))[0] == 503
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert f'engine="{pipeline.default_engine}"' in next(
        line for line in text.splitlines() if line.startswith("metrics_relay_build_info{")
    )
    assert 'metrics_relay_scrape_failures_total{reason="tls",upstream="test"} 0.0' in text
    assert "metrics_relay_client_certificate_expiry_timestamp_seconds" in text
    assert "_created" not in text
    assert "\nprocess_" not in text  # only the prefixed process metrics, never colliding names


async def test_self_metrics_pass_promtool(pki, tmp_path):
    """promtool check metrics finds nothing wrong in /relay/metrics."""
    promtool = require_tool("promtool")
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        await get(f"{relay.base_url}/metrics")
        _, _, text = await get(f"{relay.base_url}/relay/metrics")
    result = subprocess.run(  # noqa: ASYNC221 - the relay is done; nothing else runs on the loop
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""


async def test_self_metrics_in_openmetrics_on_request(pki, tmp_path):
    """A scraper asking for OpenMetrics gets it, ending with # EOF."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        _, content_type, text = await get(
            f"{relay.base_url}/relay/metrics", Accept="application/openmetrics-text; version=1.0.0"
        )
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")


async def test_reload_applies_a_good_file_and_keeps_the_old_one_on_error(pki, tmp_path):
    """POST /-/reload adds a new upstream and keeps the memo when only the timeout changed; a broken file
    gives 500 with the error and changes nothing."""
    files = pki.client_files()
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        assert (await get(f"{relay.base_url}/metrics/second"))[0] == 404
        assert (await get(f"{relay.base_url}/metrics/test"))[0] == 200
        two = (
            config_yaml(upstream.url, files)
            + config_yaml(upstream.url, files, name="second").split("\n", 1)[1]
        )
        relay.config_path.write_text(two)
        assert (await get(f"{relay.base_url}/-/reload", "POST"))[:1] == (200,)
        assert (await get(f"{relay.base_url}/metrics/second"))[2] == BODY.decode()

        relay.config_path.write_text(two + "    colour: red\n")
        status, _, text = await get(f"{relay.base_url}/-/reload", "POST")
        assert status == 500
        assert "upstreams[1].colour: unknown key" in text
        assert (await get(f"{relay.base_url}/metrics/second"))[2] == BODY.decode()
        _, _, metrics = await get(f"{relay.base_url}/relay/metrics")
        assert "metrics_relay_config_last_reload_successful 0.0" in metrics

        memo = relay.runtime.upstreams["test"].rules
        assert memo.memo_entries > 0
        relay.config_path.write_text(two.replace("name: test\n", "name: test\n    timeout: 7s\n", 1))
        assert (await get(f"{relay.base_url}/-/reload", "POST"))[:1] == (200,)
        assert relay.runtime.upstreams["test"].client.config.timeout == 7
        assert relay.runtime.upstreams["test"].rules is memo  # only the timeout changed: the memo is kept

        missing = ClientFiles(*(tmp_path / "missing" / name for name in ("ca.crt", "tls.crt", "tls.key")))
        relay.config_path.write_text(config_yaml(upstream.url, missing, name="second"))
        status, _, text = await get(f"{relay.base_url}/-/reload", "POST")
        assert status == 500
        assert f'upstreams[0].tls_config.ca_file: "{missing.ca_file}": cannot read' in text
        assert (await get(f"{relay.base_url}/metrics/test"))[0] == 200


async def test_landing_page_lists_upstreams_and_results(pki, tmp_path):
    """The landing page names each upstream, links to it and shows the latest result, escaped."""
    async with (
        running_upstream(pki.server_context(), body_handler(b"<script>", status=500)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), name="ack-one"), tmp_path) as relay,
    ):
        before = await get(f"{relay.base_url}/")
        await get(f"{relay.base_url}/metrics")
        status, content_type, page = await get(f"{relay.base_url}/")
    assert "not scraped yet" in before[2]
    assert status == 200
    assert content_type.startswith("text/html")
    assert 'href="metrics/ack-one"' in page
    assert 'href="relay/metrics"' in page
    assert "failed (http_status)" in page
    assert "<script>" not in page
    assert "BEGIN" not in page  # no certificate or key material


def write_other_key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def write_encrypted_key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("mismatched", "tls_config.key_file: the key does not match tls_config.cert_file"),
        ("encrypted", "tls_config.key_file: the key is encrypted; the relay never prompts for a passphrase"),
        ("missing", "tls_config.cert_file: cannot read"),
        ("garbage", "tls_config.cert_file: not a PEM certificate"),
    ],
)
async def test_unusable_client_files_give_502_and_stay_ready(pki, tmp_path, breakage, message):
    """Broken credential files at start: scrapes are 502s naming the file, yet the relay stays ready and its
    own metrics (where one alerts from) say what is wrong."""
    files = pki.client_files()
    if breakage == "mismatched":
        write_other_key(files.key_file)
    elif breakage == "encrypted":
        write_encrypted_key(files.key_file)
    elif breakage == "missing":
        files.cert_file.unlink()
    else:
        files.cert_file.write_text("not a certificate")
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        status, _, text = await get(f"{relay.base_url}/metrics")
        ready = await get(f"{relay.base_url}/-/ready")
        own = await get(f"{relay.base_url}/relay/metrics")
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


def serial(cert: trustme.LeafCert) -> int:
    return x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).serial_number


async def test_rotated_credentials_are_used_and_broken_ones_are_not(pki, tmp_path):
    """New files are used on the next scrape without restart; a broken new set keeps the last good one."""
    files = pki.client_files()
    async with (
        running_upstream(pki.server_context(), echo_client_serial) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        first = f'client_certificate_info{{serial="{serial(pki.client_cert)}"}} 1\n'
        assert (await get(f"{relay.base_url}/metrics"))[2] == first

        write_other_key(files.key_file)  # a broken rotation: key and certificate disagree
        assert (await get(f"{relay.base_url}/metrics"))[2] == first

        renewed = pki.client_ca.issue_cert("renewed@test")
        renewed.cert_chain_pems[0].write_to_path(str(files.cert_file))
        renewed.private_key_pem.write_to_path(str(files.key_file))
        assert (await get(f"{relay.base_url}/metrics"))[
            2
        ] == f'client_certificate_info{{serial="{serial(renewed)}"}} 1\n'


def test_ca_file_replaces_the_system_cas(pki):
    """With ca_file set, only that CA vouches for the upstream: public CAs are not trusted too."""
    files = pki.client_files()
    with_ca = parse(config_yaml("https://h/m", files), source="r.yml", base_dir=Path()).upstreams[0]
    without_ca = parse(config_yaml("https://h/m"), source="r.yml", base_dir=Path()).upstreams[0]
    context = CredentialSource(with_ca).current().ssl_context
    assert context is not None
    assert context.cert_store_stats()["x509_ca"] == 1
    system = CredentialSource(without_ca).current().ssl_context
    assert system is not None
    assert context.verify_mode == system.verify_mode == ssl.CERT_REQUIRED


def test_an_expired_certificate_never_replaces_a_good_one(pki):
    """A rotation to an already expired certificate keeps the last good set in use."""
    files = pki.client_files()
    source = CredentialSource(
        parse(config_yaml("https://h/m", files), source="r.yml", base_dir=Path()).upstreams[0]
    )
    good = source.current()
    expired = pki.client_ca.issue_cert(
        "old@test",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    expired.cert_chain_pems[0].write_to_path(str(files.cert_file))
    expired.private_key_pem.write_to_path(str(files.key_file))
    assert source.current() is good


def certificate_with_a_broken_key(cert: trustme.LeafCert) -> bytes:
    """The certificate's PEM with its public key point zeroed: it parses, its key does not."""
    certificate = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    der = bytearray(certificate.public_bytes(serialization.Encoding.DER))
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    end = der.find(spki) + len(spki)
    der[end - 20 : end] = bytes(20)
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der)) + b"-----END CERTIFICATE-----\n"


def test_a_certificate_with_an_unreadable_key_is_a_located_problem(pki):
    """A certificate whose public key cannot be read is refused by name, and never replaces a good set."""
    files = pki.client_files()
    upstream = parse(config_yaml("https://h/m", files), source="r.yml", base_dir=Path()).upstreams[0]
    source = CredentialSource(upstream)
    good = source.current()
    files.cert_file.write_bytes(certificate_with_a_broken_key(pki.client_cert))
    assert source.current() is good
    with pytest.raises(ClientTLSMaterialError, match="public key cannot be read"):
        CredentialSource(upstream).current()
