"""The running state: one object per upstream, readiness, reloads, and what the recorder counts."""

from __future__ import annotations

import datetime
import gzip

import aiohttp
import trustme
from aiohttp import web
from cryptography import x509

from relay.selfmetrics import SelfMetrics
from tests.support import Pki, body_handler, config_yaml, running_relay, running_upstream

BODY = b"# TYPE up gauge\nup 1\n" + b"".join(b'series_%d{kind="filler"} %d\n' % (i, i) for i in range(200))


async def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, dict(response.headers), await response.read()


def sample(metrics: SelfMetrics, name: str, **labels: str) -> float | None:
    """One series' value in the relay's own registry (None if absent)."""
    return metrics.registry.get_sample_value(name, labels)


async def test_head_answers_without_asking_the_upstream(pki, tmp_path):
    """HEAD /metrics gives the head a GET would get, and the upstream sees no request."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        head = await fetch(f"{relay.base_url}/metrics", "HEAD")
        named = await fetch(f"{relay.base_url}/metrics/test", "HEAD")
        unknown = await fetch(f"{relay.base_url}/metrics/nope", "HEAD")
        assert upstream.requests == []
        got = await fetch(f"{relay.base_url}/metrics")
    assert (head[0], named[0], unknown[0]) == (200, 200, 404)
    assert head[1]["Content-Type"] == got[1]["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert head[2] == b""
    assert len(upstream.requests) == 1


async def test_a_pass_counts_bytes_on_the_wire_and_decompressed(pki, tmp_path):
    """A gzip answer: received bytes are the compressed ones, decompressed bytes the body's length."""

    async def compressed(_request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "text/plain; version=0.0.4", "Content-Encoding": "gzip"}
        return web.Response(body=gzip.compress(BODY), headers=headers)

    async with (
        running_upstream(pki.server_context(), compressed) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        status, _, body = await fetch(f"{relay.base_url}/metrics")
        metrics = relay.runtime.metrics
        report = relay.runtime.upstreams["test"].health.last_pass
    assert status == 200
    assert body == BODY
    assert sample(metrics, "metrics_relay_upstream_decompressed_bytes_total", upstream="test") == len(BODY)
    assert sample(metrics, "metrics_relay_upstream_received_bytes_total", upstream="test") == len(
        gzip.compress(BODY)
    )
    assert sample(metrics, "metrics_relay_upstream_request_duration_seconds_count", upstream="test") == 1
    assert report is not None
    assert (report.ok, report.samples_in, report.samples_out) == (True, 201, 201)
    assert report.memo_hit_ratio == 0.0  # a fresh memo: every series was new


async def test_credential_facts_are_published_up_front(pki, tmp_path):
    """Client certificate validity, CA expiry and the load time are in the metrics before any scrape."""
    files = pki.client_files()
    certificate = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    async with running_relay(config_yaml("https://127.0.0.1:1/metrics", files), tmp_path) as relay:
        metrics = relay.runtime.metrics
        values = {
            name: sample(metrics, f"metrics_relay_{name}", upstream="test")
            for name in (
                "client_certificate_expiry_timestamp_seconds",
                "client_certificate_not_before_timestamp_seconds",
                "ca_certificate_expiry_timestamp_seconds",
                "credentials_last_reload_success_timestamp_seconds",
                "credentials_rotation_refused",
            )
        }
    assert (
        values["client_certificate_expiry_timestamp_seconds"] == certificate.not_valid_after_utc.timestamp()
    )
    assert values["client_certificate_not_before_timestamp_seconds"] == (
        certificate.not_valid_before_utc.timestamp()
    )
    assert values["ca_certificate_expiry_timestamp_seconds"] == ca.not_valid_after_utc.timestamp()
    assert values["credentials_last_reload_success_timestamp_seconds"] is not None
    assert values["credentials_rotation_refused"] == 0


async def test_a_refused_rotation_is_a_gauge_until_a_good_set_arrives(pki, tmp_path):
    """An expired certificate rotated in is refused (gauge 1, last good set in use); a good one clears it."""
    files = pki.client_files()
    good = files.cert_file.read_bytes(), files.key_file.read_bytes()
    expired = pki.client_ca.issue_cert(
        "metrics-relay@test", not_after=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    )
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        metrics = relay.runtime.metrics
        expired.cert_chain_pems[0].write_to_path(str(files.cert_file))
        expired.private_key_pem.write_to_path(str(files.key_file))
        refused_status = (await fetch(f"{relay.base_url}/metrics"))[0]
        refused = sample(metrics, "metrics_relay_credentials_rotation_refused", upstream="test")
        files.cert_file.write_bytes(good[0])
        files.key_file.write_bytes(good[1])
        await fetch(f"{relay.base_url}/metrics")
        cleared = sample(metrics, "metrics_relay_credentials_rotation_refused", upstream="test")
    assert refused_status == 200  # the last good set served the scrape
    assert (refused, cleared) == (1, 0)


async def test_reload_keeps_health_and_retires_removed_upstreams(pki, tmp_path):
    """A reload keeps the health of a kept name, and a removed upstream's series leave the metrics."""
    files = pki.client_files()
    async with running_upstream(pki.server_context(), body_handler(BODY)) as upstream:
        two = config_yaml(upstream.url, files) + config_yaml(upstream.url, files, name="other").removeprefix(
            "upstreams:\n"
        )
        async with running_relay(two, tmp_path) as relay:
            await fetch(f"{relay.base_url}/metrics/test")
            removed = relay.runtime.upstreams["other"]
            relay.config_path.write_text(config_yaml(upstream.url, files, "    timeout: 7s\n"))
            relay.runtime.reload()
            kept = relay.runtime.upstreams["test"]
            exposition = relay.runtime.metrics.exposition(openmetrics=False)[0].decode()
            ready = (await fetch(f"{relay.base_url}/-/ready"))[0]
    assert list(relay.runtime.upstreams) == ["test"]
    assert kept.config.timeout == 7
    assert kept.health.last_scrape is not None
    assert kept.health.last_scrape.ok
    assert removed.recorder.retired
    assert 'upstream="other"' not in exposition
    assert ready == 200


async def test_an_untrusted_upstream_leaves_the_relay_ready(tmp_path):
    """Scrapes of an upstream whose certificate is not trusted fail, yet /-/ready stays 200."""
    pki = Pki(tmp_path)
    stranger = trustme.CA().issue_cert("127.0.0.1")
    context = pki.server_context()
    stranger.configure_cert(context)
    async with (
        running_upstream(context, body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        status, _, text = await fetch(f"{relay.base_url}/metrics")
        ready = (await fetch(f"{relay.base_url}/-/ready"))[0]
        outcome = relay.runtime.upstreams["test"].health.last_scrape
    assert (status, ready) == (502, 200)
    assert outcome is not None
    assert outcome.reason == "tls"
    assert outcome.explanation.splitlines()[0] in text.decode()


async def test_a_reload_without_ca_file_drops_its_expiry(pki, tmp_path):
    """A reload that removes ca_file removes the CA expiry series, so no alert fires on a stale date."""
    files = pki.client_files()
    async with running_relay(config_yaml("https://127.0.0.1:1/metrics", files), tmp_path) as relay:
        metrics = relay.runtime.metrics
        before = sample(metrics, "metrics_relay_ca_certificate_expiry_timestamp_seconds", upstream="test")
        relay.config_path.write_text(
            "upstreams:\n  - name: test\n    url: https://127.0.0.1:1/metrics\n    tls_config:\n"
            f"      cert_file: {files.cert_file}\n      key_file: {files.key_file}\n"
        )
        relay.runtime.reload()
        after = sample(metrics, "metrics_relay_ca_certificate_expiry_timestamp_seconds", upstream="test")
        client_expiry = sample(
            metrics, "metrics_relay_client_certificate_expiry_timestamp_seconds", upstream="test"
        )
    assert before is not None
    assert after is None
    assert client_expiry is not None
