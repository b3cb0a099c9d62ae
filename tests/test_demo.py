"""The --demo aggregator stand-in: certificates, mTLS gate, both formats, and the demo's rules end to end."""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from relay.config import parse as parse_config
from relay.demo import (
    CONTENT_TYPE,
    DROPPED_SERIES,
    ControlPlaneSimulation,
    DemoAggregator,
    running_aggregator,
    write_demo_pki,
)
from relay.negotiation import OPENMETRICS_CONTENT_TYPE, upstream_accept
from relay.relabel import RelabelProgram
from relay.tls import check as check_credentials
from tests.support import Relay, require_tool, running_relay
from tests.test_negotiation import PROMETHEUS_2_ACCEPT

HOSTING = {"hosting": "true"}
NOW = 1_750_000_000.0
# What the demo's rules leave of the relayed body: a deprecated family goes, its successor stays...
DROPPED_FAMILY = "apiserver_storage_objects"
KEPT_FAMILIES = ("apiserver_resource_objects", "rest_client_requests_total")
# ... and of these histograms' buckets only the bounds given here stay.
KEPT_BOUNDS = {
    "apiserver_request_duration_seconds": {0.005, 0.025, 0.05, 0.1, 1, 5, 10, 30, 60, math.inf},
    "workqueue_queue_duration_seconds": {math.inf},
    "workqueue_work_duration_seconds": {math.inf},
    "scheduler_framework_extension_point_duration_seconds": {math.inf},
}


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
    url: str,
    context: ssl.SSLContext | None = None,
    params: dict[str, str] | None = None,
    accept: str | None = None,
) -> tuple[int, str, bytes]:
    """GET `url` (over TLS with `context`, if given); the status, Content-Type and body."""
    headers = {} if accept is None else {"Accept": accept}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params=params, ssl=context or True, headers=headers) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def promtool_check_metrics(body: bytes) -> tuple[int | None, str]:
    """`promtool check metrics` on `body`: its exit code and what it printed (nothing when all is well)."""
    process = await asyncio.create_subprocess_exec(
        require_tool("promtool"),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(body)
    return process.returncode, output.decode()


def samples(body: bytes, *, openmetrics: bool) -> Iterator[Sample]:
    """Every sample of `body`, read by prometheus_client's parser for its format (the strict one for OM)."""
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    for family in parse(body.decode()):
        yield from family.samples


def series(sample: Sample) -> dict[str, str]:
    """A sample's label set with `__name__`, as relabel rules see it."""
    return {"__name__": sample.name, **sample.labels}


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
    body = (await scrape(aggregator.url, client_context(aggregator), HOSTING))[2]
    assert await promtool_check_metrics(body) == (0, "")


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        pytest.param(
            upstream_accept(openmetrics=True), OPENMETRICS_CONTENT_TYPE, id="relay-asking-openmetrics"
        ),
        pytest.param(upstream_accept(openmetrics=False), CONTENT_TYPE, id="relay-asking-text"),
        pytest.param(None, CONTENT_TYPE, id="no-accept"),
        pytest.param(
            "application/openmetrics-text;q=0.3,text/plain;q=0.6", CONTENT_TYPE, id="text-preferred"
        ),
        pytest.param("application/openmetrics-text", OPENMETRICS_CONTENT_TYPE, id="openmetrics-only"),
    ],
)
async def test_the_format_follows_the_accept_header(aggregator, accept, content_type):
    """OpenMetrics (ending in # EOF) goes to a client that prefers it, the text format to every other."""
    status, answered, body = await scrape(aggregator.url, client_context(aggregator), HOSTING, accept)
    assert (status, answered) == (200, content_type)
    assert body.endswith(b"\n# EOF\n") == (content_type == OPENMETRICS_CONTENT_TYPE)


def test_openmetrics_exposition_passes_the_strict_parser():
    """The OpenMetrics body passes prometheus_client's strict parser, exemplars on a counter and a bucket."""
    body = ControlPlaneSimulation().exposition(NOW, openmetrics=True)
    families = list(openmetrics_families(body.decode()))
    counters = [family for family in families if family.type == "counter"]
    assert counters
    assert not [family.name for family in counters if family.name.endswith("_total")]
    traced = {sample.name for family in families for sample in family.samples if sample.exemplar}
    assert traced == {"apiserver_request_total", "apiserver_request_duration_seconds_bucket"}


def test_both_formats_carry_the_same_series():
    """Text and OpenMetrics of the same moment name the same series, bounds written apart (1 and 1.0)."""

    def read(body: bytes, *, openmetrics: bool) -> dict[tuple[tuple[str, str], ...], float]:
        found = {}
        for sample in samples(body, openmetrics=openmetrics):
            labels = series(sample)
            for bound in ("le", "quantile"):
                if bound in labels:
                    labels[bound] = repr(float(labels[bound]))
            found[tuple(sorted(labels.items()))] = sample.value
        return found

    text = ControlPlaneSimulation(seed=3).exposition(NOW)
    openmetrics = ControlPlaneSimulation(seed=3).exposition(NOW, openmetrics=True)
    assert b'le="1"' in text
    assert b'le="1.0"' in openmetrics
    assert read(text, openmetrics=False) == read(openmetrics, openmetrics=True)


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_every_demo_rule_drops_or_changes_demo_series(tmp_path, openmetrics):
    """Each rule of the demo configuration acts on some series of the stand-in's body, in either format."""
    aggregator = DemoAggregator(url="https://127.0.0.1:1/metrics", pki=write_demo_pki(tmp_path))
    (upstream,) = parse_config(aggregator.relay_config_yaml(), source="<demo>", base_dir=tmp_path).upstreams
    program = RelabelProgram.compile(upstream.metric_relabel_configs)
    acted: set[str] = set()
    for sample in samples(
        ControlPlaneSimulation().exposition(NOW, openmetrics=openmetrics), openmetrics=openmetrics
    ):
        before = {name: value for name, value in series(sample).items() if value}
        for location, after in program.trace(before):
            if after != before:
                acted.add(location)
            before = after or {}
    assert acted == {spec.location for spec in upstream.metric_relabel_configs}


def test_prometheus_accepts_the_demo_rules(tmp_path):
    """promtool check config accepts the demo's metric_relabel_configs in a Prometheus scrape config."""
    promtool = require_tool("promtool")
    aggregator = DemoAggregator(url="https://127.0.0.1:1/metrics", pki=write_demo_pki(tmp_path))
    (upstream,) = yaml.safe_load(aggregator.relay_config_yaml())["upstreams"]
    prometheus_config = {
        "scrape_configs": [
            {
                "job_name": "demo",
                "static_configs": [{"targets": ["127.0.0.1:9795"]}],
                "metric_relabel_configs": upstream["metric_relabel_configs"],
            }
        ]
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(prometheus_config), encoding="utf-8")
    process = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert process.returncode == 0, process.stdout + process.stderr


@pytest.fixture
async def demo_relay(aggregator, tmp_path):
    """A relay running the configuration the stand-in writes for itself, as `metrics-relay --demo` does."""
    async with running_relay(aggregator.relay_config_yaml(), tmp_path) as relay:
        yield relay


def test_relay_configuration_names_the_demo(aggregator, tmp_path):
    """The generated configuration loads, names the stand-in with hosting=true, and its credentials work."""
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


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        pytest.param(None, CONTENT_TYPE, id="text"),
        pytest.param(PROMETHEUS_2_ACCEPT, OPENMETRICS_CONTENT_TYPE, id="openmetrics"),
    ],
)
async def test_relayed_body_shows_the_rules_effect_and_passes_a_strict_parser(
    demo_relay: Relay, accept, content_type
):
    """The relayed body lacks what the rules drop, keeps the rest, passes promtool or the strict OM parser."""
    status, answered, body = await scrape(f"{demo_relay.base_url}/metrics", accept=accept)
    assert (status, answered) == (200, content_type)
    openmetrics = content_type == OPENMETRICS_CONTENT_TYPE
    if not openmetrics:
        assert await promtool_check_metrics(body) == (0, "")
    relayed = list(samples(body, openmetrics=openmetrics))  # for OpenMetrics, the strict parser's verdict
    names = {sample.name for sample in relayed}
    assert DROPPED_FAMILY not in names
    assert set(KEPT_FAMILIES) <= names
    bounds: dict[str, set[float]] = {family: set() for family in KEPT_BOUNDS}
    for sample in relayed:
        family = sample.name.removesuffix("_bucket")
        if family != sample.name and family in bounds:
            bounds[family].add(float(sample.labels["le"]))
    assert bounds == KEPT_BOUNDS
    assert {f"{family}_count" for family in KEPT_BOUNDS} <= names
    assert not [sample for sample in relayed if "host" in sample.labels]
    assert any(sample.exemplar for sample in relayed) == openmetrics


async def test_printed_relabel_link_traces_a_dropped_series(aggregator, demo_relay: Relay):
    """The /relay/relabel link the demo prints shows its series dropped by one of the rules."""
    (url,) = [url for url, _ in aggregator.relay_links(demo_relay.base_url) if "/relay/relabel?" in url]
    status, _, body = await scrape(url, accept="text/plain")
    assert status == 200
    assert DROPPED_SERIES.split("{")[0] in body.decode()
    assert "dropped" in body.decode().strip().splitlines()[-1]


async def test_debug_page_shows_every_demo_rule_at_work(aggregator, demo_relay: Relay, tmp_path):
    """The per-rule summary of a fresh demo scrape has each rule dropping or changing series."""
    (upstream,) = parse_config(aggregator.relay_config_yaml(), source="<demo>", base_dir=tmp_path).upstreams
    status, _, body = await scrape(f"{demo_relay.base_url}/relay/debug/relabel/ack-control-plane?format=json")
    assert status == 200
    summary = json.loads(body)
    assert [(rule["index"], rule["dropped"] + rule["changed"] > 0) for rule in summary["rules"]] == [
        (index, True) for index in range(len(upstream.metric_relabel_configs))
    ]
    assert 0 < summary["samples_out"] < summary["samples_in"]


async def test_printed_links_answer(aggregator, demo_relay: Relay):
    """Every page the demo prints answers 200 on the relay."""
    statuses = {url: (await scrape(url))[0] for url, _ in aggregator.relay_links(demo_relay.base_url)}
    assert statuses == dict.fromkeys(statuses, 200)


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
