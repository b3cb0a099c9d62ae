"""The --demo Metrics Aggregator stand-in: its certificates, its mTLS gate, and the exposition it serves."""

from __future__ import annotations

import asyncio
import math
import os
import ssl

import aiohttp
import pytest
import trustme
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from relay.config import parse as parse_config
from relay.demo import (
    CONTENT_TYPE,
    ControlPlaneSimulation,
    DemoAggregator,
    running_aggregator,
    write_demo_pki,
)
from relay.tls import check as check_credentials
from tests.support import require_tool, running_relay

HOSTING = {"hosting": "true"}


@pytest.fixture
async def aggregator(tmp_path):
    """A running stand-in with its certificates in a fresh folder."""
    async with running_aggregator(tmp_path / "pki") as running:
        yield running


def client_context(aggregator: DemoAggregator, *, with_certificate: bool = True) -> ssl.SSLContext:
    """A client TLS context trusting the demo CA, presenting the demo client certificate if asked."""
    context = ssl.create_default_context(cafile=str(aggregator.pki.ca_cert))
    if with_certificate:
        context.load_cert_chain(aggregator.pki.client_cert, aggregator.pki.client_key)
    return context


async def scrape(
    url: str, context: ssl.SSLContext, params: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """GET `url` over TLS with `context`; the status, Content-Type and body."""
    async with aiohttp.ClientSession() as session, session.get(url, params=params, ssl=context) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


def monotonic_samples(body: bytes) -> dict[str, float]:
    """The samples that may never go down (counters; histogram and summary parts but quantiles), by series."""
    monotonic_names: set[str] = set()
    samples = {}
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            suffixes = {
                "counter": ("",),
                "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count"),
            }
            monotonic_names.update(name + suffix for suffix in suffixes.get(kind, ()))
        elif line and not line.startswith("#"):
            # No timestamps here, and label values may hold spaces: the value is after the last space.
            series, _, value = line.rpartition(" ")
            if series.split("{", 1)[0] in monotonic_names:
                samples[series] = float(value)
    return samples


async def test_scrape_with_client_certificate_gets_the_exposition(aggregator):
    """A client with the demo certificate gets a 200 with the exact text format Content-Type."""
    status, content_type, body = await scrape(aggregator.url, client_context(aggregator), HOSTING)
    assert status == 200
    assert content_type == CONTENT_TYPE
    assert body.startswith(b"# HELP ")
    assert b"\nscheduler_pending_pods{" in body


async def test_scrape_without_client_certificate_is_unauthorized(aggregator):
    """A client without a certificate gets kube-apiserver's 401 Unauthorized, not the metrics."""
    status, _, body = await scrape(
        aggregator.url, client_context(aggregator, with_certificate=False), HOSTING
    )
    assert (status, body) == (401, b"Unauthorized")


async def test_client_certificate_from_another_ca_is_refused(aggregator):
    """A certificate the demo CA did not sign is refused, during the handshake or with a 401."""
    stranger = trustme.CA().issue_cert("metrics-relay@elsewhere")
    context = client_context(aggregator, with_certificate=False)
    stranger.configure_cert(context)
    try:
        status, _, body = await scrape(aggregator.url, context, HOSTING)
    except aiohttp.ClientConnectionError:
        return  # refused in the handshake; with TLS 1.3 the client sees that as a dropped connection
    assert (status, body) == (401, b"Unauthorized")


@pytest.mark.parametrize("params", [None, {"hosting": "false"}, {"hosting": ""}])
async def test_scrape_without_hosting_true_is_a_bad_request(aggregator, params):
    """Without the query hosting=true the aggregator answers 400 with a short explanation."""
    status, _, body = await scrape(aggregator.url, client_context(aggregator), params)
    assert status == 400
    assert b"hosting=true" in body


async def test_consecutive_scrapes_differ_and_counters_never_decrease(aggregator):
    """Two scrapes give different bodies, and no counter, bucket, sum or count is lower in the second."""
    context = client_context(aggregator)
    first = (await scrape(aggregator.url, context, HOSTING))[2]
    second = (await scrape(aggregator.url, context, HOSTING))[2]
    assert first != second
    before, after = monotonic_samples(first), monotonic_samples(second)
    assert len(before) > 500
    assert before.keys() == after.keys()
    decreased = {
        series: (before[series], after[series]) for series in before if after[series] < before[series]
    }
    assert decreased == {}


async def test_exposition_passes_promtool(aggregator):
    """promtool check metrics finds neither parse errors nor lint problems in a scraped body."""
    promtool = require_tool("promtool")
    body = (await scrape(aggregator.url, client_context(aggregator), HOSTING))[2]
    process = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(body)
    assert (process.returncode, output.decode()) == (0, "")


async def test_relay_configuration_relays_the_demo(aggregator, tmp_path):
    """The generated configuration loads, its credentials check out, and a relay built from it serves 200."""
    config = parse_config(aggregator.relay_config_yaml(), source="<demo>", base_dir=tmp_path)
    (upstream,) = config.upstreams
    assert (upstream.name, upstream.url, upstream.params) == (
        "ack-control-plane",
        aggregator.url,
        (("hosting", "true"),),
    )
    assert upstream.timeout == 10.0
    assert upstream.tls_config.cert_file == aggregator.pki.client_cert
    check_credentials(upstream)
    async with (
        running_relay(aggregator.relay_config_yaml(), tmp_path) as relay,
        aiohttp.ClientSession() as session,
        session.get(f"{relay.base_url}/metrics") as response,
    ):
        assert response.status == 200
        assert b"\nscheduler_schedule_attempts_total{" in await response.read()


def test_pki_files_have_the_roles_and_modes_of_the_design(tmp_path):
    """The client is a system:monitoring TLS client, the server is named for loopback, keys are 0600."""
    pki = write_demo_pki(tmp_path)
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:monitoring"
    assert client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kubernetes"} <= set(names.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    for key in (pki.server_key, pki.client_key):
        assert os.stat(key).st_mode & 0o777 == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "ca.crt",
        "client.crt",
        "client.key",
        "server.crt",
        "server.key",
    ]


def test_histograms_are_cumulative_and_counted():
    """Every histogram's buckets rise to +Inf, and its _count equals the +Inf bucket."""
    body = ControlPlaneSimulation(seed=7).exposition(1_750_000_000.0).decode()
    histograms = [family for family in text_string_to_metric_families(body) if family.type == "histogram"]
    assert len(histograms) >= 8
    for family in histograms:
        series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        counts = {}
        for sample in family.samples:
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            if sample.name.endswith("_bucket"):
                series.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                counts[key] = sample.value
        for key, buckets in series.items():
            assert buckets == sorted(buckets), f"{family.name}{key} buckets out of order"
            assert buckets[-1][0] == math.inf
            assert buckets[-1][1] == counts[key]


def test_label_values_needing_escapes_round_trip():
    """Label values with a quote, a backslash and a newline are escaped so a parser reads them back intact."""
    body = ControlPlaneSimulation().exposition(1_750_000_000.0)
    assert b'\\"VSwitchId\\"' in body
    assert b"^[\\\\w" in body
    assert b"control.\\nRetry" in body
    messages = {
        sample.labels["message"]
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if "message" in sample.labels
    }
    assert 'The specified parameter "VSwitchId" is not valid.' in messages
    assert r"TagValue must match ^[\w.:/=+-]{1,128}$" in messages
    assert "Request was denied due to user flow control.\nRetry later." in messages


def test_a_clock_going_back_changes_no_counter_downwards():
    """An exposition at an earlier time than the last one counts as no time passing, not negative time."""
    simulation = ControlPlaneSimulation()
    first = monotonic_samples(simulation.exposition(1_750_000_000.0))
    second = monotonic_samples(simulation.exposition(1_749_000_000.0))
    assert all(second[series] >= value for series, value in first.items())
