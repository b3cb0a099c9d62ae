"""Content negotiation and OpenMetrics: the format asked upstream, the format served, OpenMetrics' rules."""

from __future__ import annotations

import aiohttp
import pytest

from relay.errors import InvalidExpositionError
from relay.negotiation import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    TEXT_UTF8_CONTENT_TYPE,
    answer_is_openmetrics,
    scraper_preferences,
)
from tests.support import body_handler, config_yaml, require_fixtures, running_relay, running_upstream
from tests.test_pipeline import relay, rules

pytestmark = pytest.mark.usefixtures("engine")

PROMETHEUS_2_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


@pytest.mark.parametrize(
    ("accept", "openmetrics", "utf8"),
    [
        ("", False, False),
        ("*/*", False, False),
        ("text/plain", False, False),
        ("text/plain;version=0.0.4", False, False),
        (PROMETHEUS_2_ACCEPT, True, False),
        (PROMETHEUS_3_ACCEPT, True, True),
        ("application/openmetrics-text;version=1.0.0;q=0.2,text/plain;version=0.0.4", False, False),
        ("application/openmetrics-text;version=2.0.0", False, False),
        ("text/plain;version=1.0.0;escaping=allow-utf-8", False, True),
        ("text/plain;version=1.0.0;escaping=underscores", False, False),
    ],
)
def test_scraper_preferences(accept, openmetrics, utf8):
    """OpenMetrics when the scraper ranks it first; quoted UTF-8 names when it allows them in text."""
    preferences = scraper_preferences(accept)
    assert (preferences.openmetrics, preferences.utf8_names) == (openmetrics, utf8)


@pytest.mark.parametrize(
    ("content_type", "asked", "answer"),
    [
        ("text/plain; version=0.0.4; charset=utf-8", False, False),
        ("text/plain", True, False),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True, True),
        ("application/openmetrics-text; version=1.0.0", False, None),
        ("text/plain; version=1.0.0", False, None),
        ("application/json", True, None),
        ("", False, None),
    ],
)
def test_upstream_answers(content_type, asked, answer):
    """Text 0.0.4 is always taken; OpenMetrics only when asked for; anything else is refused."""
    assert answer_is_openmetrics(content_type, asked) is answer


OPENMETRICS_BODY = (
    b"# HELP rpc_requests Total RPC requests.\n# TYPE rpc_requests counter\n# UNIT rpc_requests requests\n"
    b'rpc_requests_total{service="a"} 22.0\nrpc_requests_created{service="a"} 1.7268398130168908e+09\n'
    b"# TYPE lat histogram\n"
    b'lat_bucket{le="0.1"} 3 # {trace_id="17783"} 0.05 1.7268398142239082e+09\n'
    b'lat_bucket{le="+Inf"} 5\nlat_sum 0.3\nlat_count 5 1520879607.789\n'
    b"# EOF\n"
)


def test_openmetrics_passes_through_with_exemplars_units_and_eof():
    """An OpenMetrics body keeps its exemplars, UNIT, _created samples, fractional timestamps and # EOF."""
    out, relabeler = relay(OPENMETRICS_BODY, rules(), openmetrics=True)
    assert out == OPENMETRICS_BODY
    assert relabeler.samples_out == 6


def test_openmetrics_relabeling_keeps_exemplars_of_kept_samples():
    """Rules apply to OpenMetrics samples; a kept sample keeps its exemplar; # EOF stays last."""
    drop = "      - source_labels: [__name__]\n        regex: rpc_.*\n        action: drop\n"
    out, _ = relay(OPENMETRICS_BODY, rules(drop), openmetrics=True)
    assert out.startswith(b'# TYPE lat histogram\nlat_bucket{le="0.1"} 3 # {trace_id="17783"}')
    assert out.endswith(b"lat_count 5 1520879607.789\n# EOF\n")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (OPENMETRICS_BODY.removesuffix(b"# EOF\n"), "without # EOF"),
        (OPENMETRICS_BODY + b"late 1\n", "after # EOF"),
        (b"a 1\n\nb 2\n# EOF\n", "blank lines"),
        (b"# a comment\n# EOF\n", "only HELP, TYPE, UNIT and EOF"),
        (b'a 1 # {x="y"\n# EOF\n', "exemplar"),
        (b"# TYPE a untyped\n# EOF\n", "invalid metric type"),
    ],
)
def test_openmetrics_rules_are_enforced(body, problem):
    """A body that is not valid OpenMetrics fails: a missing # EOF is how a truncated body shows."""
    with pytest.raises(InvalidExpositionError, match=problem):
        relay(body, rules(), openmetrics=True)


def test_utf8_names_are_quoted_for_scrapers_that_allow_them_and_dropped_otherwise():
    """Quoted UTF-8 names survive for a Prometheus 3 scraper; a text 0.0.4 body cannot carry them."""
    body = b'{"my.metric","a.b"="x",c="y"} 1\nplain{"d.e"="z"} 2\nok 3\n'
    out, _ = relay(body, rules(), utf8_names=True)
    assert out == body
    out, relabeler = relay(body, rules())
    assert out == b"ok 3\n"
    assert relabeler.dropped["utf8_name"] == 2


async def scrape_with(url: str, accept: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers={"Accept": accept}) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def test_prometheus_gets_openmetrics_when_the_upstream_speaks_it(pki, tmp_path):
    """A scraper preferring OpenMetrics gets it from an OpenMetrics upstream; curl gets a clean 502."""
    handler = body_handler(OPENMETRICS_BODY, content_type="application/openmetrics-text; version=1.0.0")
    async with (
        running_upstream(pki.server_context(), handler) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay_server,
    ):
        answer = await scrape_with(f"{relay_server.base_url}/metrics", PROMETHEUS_2_ACCEPT)
        assert (
            upstream.requests[-1].headers["Accept"].startswith("application/openmetrics-text;version=1.0.0")
        )
        plain = await scrape_with(f"{relay_server.base_url}/metrics", "*/*")
    assert answer == (200, OPENMETRICS_CONTENT_TYPE, OPENMETRICS_BODY)
    assert plain[0] == 502
    assert b"Content-Type" in plain[2]


async def test_text_upstream_serves_text_even_to_openmetrics_scrapers(pki, tmp_path):
    """The relay never converts: a text upstream gives text, with UTF-8 names for Prometheus 3."""
    body = b'# TYPE m gauge\nm{"a.b"="x"} 1\n'
    async with (
        running_upstream(pki.server_context(), body_handler(body)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay_server,
    ):
        prometheus_2 = await scrape_with(f"{relay_server.base_url}/metrics", PROMETHEUS_2_ACCEPT)
        prometheus_3 = await scrape_with(f"{relay_server.base_url}/metrics", PROMETHEUS_3_ACCEPT)
    assert prometheus_2 == (200, TEXT_CONTENT_TYPE, b"")
    assert prometheus_3 == (200, TEXT_UTF8_CONTENT_TYPE, body)


def test_openmetrics_fixture_relays_byte_for_byte():
    """The real OpenMetrics fixture (exemplars, _created, negative buckets, empty labels) passes unchanged."""
    body = (require_fixtures() / "openmetrics-alltypes.5mfs.om.txt").read_bytes()
    out, relabeler = relay(body, rules(), openmetrics=True)
    assert out == body
    sample_lines = [line for line in body.splitlines() if not line.startswith(b"#")]
    assert relabeler.samples_in == relabeler.samples_out == len(sample_lines) == 53


def test_a_bucket_renamed_away_from_bucket_loses_its_exemplar():
    """OpenMetrics allows exemplars on _total and _bucket samples only: a rename elsewhere drops it."""
    rename = (
        "      - source_labels: [__name__]\n        regex: (.*)_bucket\n        target_label: __name__\n"
        "        replacement: ${1}_le\n"
    )
    out, _ = relay(OPENMETRICS_BODY, rules(rename), openmetrics=True)
    assert b'lat_le{le="0.1"} 3\n' in out
    assert b"trace_id" not in out
