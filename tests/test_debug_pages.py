"""The relabel debugging pages on a real relay with real mTLS upstreams, held to real Prometheus' counts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import aiohttp.web
import pytest
import yaml

from relay.debug_pages import prefers_html
from tests.prometheus_oracle import LabelSet, prometheus_config, running_prometheus, scrape_job
from tests.support import (
    Handler,
    Pki,
    body_handler,
    config_yaml,
    require_fixtures,
    require_tool,
    running_relay,
    running_upstream,
    trickle,
)
from tests.test_relabel_report import KUBE_RULES

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
BODY = b'# TYPE http_requests_total counter\nhttp_requests_total{verb="LIST"} 3\ngo_goroutines 12\n'
RELABEL_TEST = (sys.executable, "-m", "relay", "relabel-test")
PARAMS = '    params:\n      hosting: ["true"]\n'
ORACLE_FIXTURES = {
    "apiserver": "kube-apiserver-1.35-minikube.prom",
    "scheduler": "kube-scheduler-1.35-minikube.prom",
    "etcd": "etcd-1.35-minikube.prom",
}


async def get(url: str, accept: str = "*/*", **params: str) -> tuple[int, str, str]:
    """GET `url` with these query parameters; status, media type and text."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params=params, headers={"Accept": accept}) as response,
    ):
        return response.status, response.content_type, await response.text()


def multi_upstream_config(entries: dict[str, str], pki: Pki, rules: str) -> str:
    """A relay configuration with one upstream per name (URL as given), each with the same rules."""
    files = pki.client_files("relay")
    return "upstreams:\n" + "".join(
        config_yaml(url, files, rules, name=name).removeprefix("upstreams:\n")
        for name, url in entries.items()
    )


def reference_counts(stored: list[set[LabelSet]]) -> list[tuple[int, int, int, int]]:
    """Per rule, from what Prometheus stored with the first i rules and with the first i+1: samples in and
    out, dropped, and changed (series with a label set the smaller rule list did not produce). That is
    exact for rules that never make two series one, as these do not."""
    return [
        (len(before), len(after), len(before) - len(after), len(after - before))
        for before, after in itertools.pairwise(stored)
    ]


def rule_counts(summary: dict) -> list[tuple[int, int, int, int]]:
    return [
        (rule["samples_in"], rule["samples_out"], rule["dropped"], rule["changed"])
        for rule in summary["rules"]
    ]


@pytest.mark.peer
@pytest.mark.fixtures
@pytest.mark.timeout(240)
async def test_command_and_page_agree_with_prometheus_on_the_fixtures(pki, tmp_path):
    """The debug page (live mTLS scrape) and the command (stdin) give the counts Prometheus' own
    relabeling gives, rule by rule, on the real control-plane bodies with kube-prometheus-style rules."""
    fixtures = require_fixtures()
    binary = require_tool("prometheus")
    bodies = {name: (fixtures / file).read_bytes() for name, file in ORACLE_FIXTURES.items()}
    rules = yaml.safe_load(KUBE_RULES)["metric_relabel_configs"]
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name, body in bodies.items():
            upstream = await stack.enter_async_context(
                running_upstream(pki.server_context(), body_handler(body))
            )
            urls[name] = upstream.url
        relay = await stack.enter_async_context(
            running_relay(multi_upstream_config(urls, pki, KUBE_RULES), tmp_path)
        )
        prometheus_files = pki.client_files("prometheus")
        jobs = [
            scrape_job(
                f"{name}-{count}", urlsplit(url).netloc, "/metrics", rules=rules[:count], tls=prometheus_files
            )
            for name, url in urls.items()
            for count in range(len(rules) + 1)
        ]
        prometheus = await stack.enter_async_context(
            running_prometheus(binary, prometheus_config(jobs), tmp_path / "prometheus")
        )
        pages = {
            name: await get(f"{relay.base_url}/relay/debug/relabel/{name}", format="json") for name in urls
        }
        commands = {
            name: await asyncio.to_thread(
                subprocess.run,
                [*RELABEL_TEST, f"--config.file={relay.config_path}", f"--upstream={name}", "--format=json"],
                input=body,
                capture_output=True,
                timeout=60,
                check=False,
            )
            for name, body in bodies.items()
        }
        job_names = [job["job_name"] for job in jobs]
        await prometheus.wait_until_up(job_names, within=120)
        await prometheus.stop_scraping()
        at = await prometheus.last_time_all_up(job_names)
        stored = {job: set(await prometheus.stored_series(job, at)) for job in job_names}
    for name in urls:
        reference = reference_counts([stored[f"{name}-{count}"] for count in range(len(rules) + 1)])
        assert pages[name][0] == 200, pages[name]
        assert commands[name].returncode == 0, commands[name].stderr
        for summary in (json.loads(pages[name][2]), json.loads(commands[name].stdout)):
            assert rule_counts(summary) == reference, name
            assert (summary["samples_in"], summary["samples_out"]) == (
                len(stored[f"{name}-0"]),
                len(stored[f"{name}-{len(rules)}"]),
            )
            assert any(rule["dropped"] for rule in summary["rules"])  # the rules do something here


async def test_summary_page_is_plain_escaped_html(pki, tmp_path):
    """The page is HTML without external assets, with the counts and the links to JSON and the trace."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), KUBE_RULES + PARAMS), tmp_path) as relay,
    ):
        status, content_type, page = await get(f"{relay.base_url}/relay/debug/relabel/test", BROWSER_ACCEPT)
        text = await get(f"{relay.base_url}/relay/debug/relabel/test", format="text")
    assert (status, content_type) == (200, "text/html")
    assert page.startswith("<!DOCTYPE html>")
    assert f"<code>{upstream.url}?hosting=true</code>" in page
    assert "<script" not in page
    assert "src=" not in page
    assert "<link" not in page
    assert (
        "<strong>2</strong> samples in, <strong>1</strong> relayed;\nleft out: 1 dropped by the rules."
        in page
    )
    assert '<td class="n">2</td><td class="n">1</td><td class="n">1</td><td class="n">0</td>' in page
    assert "<code>go_goroutines</code>: 1 dropped" in page
    assert 'href="test?format=json"' in page
    assert 'href="../../relabel?upstream=test"' in page
    assert text[0] == 200
    assert text[2].splitlines()[0] == "upstream test: 2 samples in, 1 out"


async def test_trace_for_curl_for_a_browser_and_as_json(pki, tmp_path):
    """/relay/relabel answers curl in text, a browser in HTML and `format=json` in JSON, with the verdict."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), KUBE_RULES), tmp_path) as relay,
    ):
        url = f"{relay.base_url}/relay/relabel"
        series = 'http_requests_total{verb="LIST"} 3 1700000000000'
        text = await get(url, series=series)
        html = await get(url, BROWSER_ACCEPT, series=series, upstream="test")
        as_json = await get(url, series='{__name__="go_goroutines"}', format="json")
        escaped = await get(url, BROWSER_ACCEPT, series='a{b="<script>x</script>"}')
    verdict = 'kept as {__name__="http_requests_total", verb="LIST", cluster="one", verb_class="read"}'
    assert text[:2] == (200, "text/plain")
    assert text[2].splitlines()[-1] == f"verdict  {verdict}"
    assert "rule 3   replace   upstreams[0].metric_relabel_configs[3] (line" in text[2]
    assert html[:2] == (200, "text/html")
    assert '<span class="kept">kept as {__name__=&quot;http_requests_total&quot;' in html[2]
    assert "<td>3</td><td>replace</td>" in html[2]
    assert "give the series" not in html[2]
    assert as_json[:2] == (200, "application/json")
    assert json.loads(as_json[2])["verdict"] == "dropped by rule 4 (drop)"
    assert "<script>" not in escaped[2]
    assert "&lt;script&gt;x&lt;/script&gt;" in escaped[2]


@pytest.mark.parametrize(
    ("params", "accept", "expected"),
    [
        pytest.param(
            {"upstream": "nope", "series": "a"},
            "*/*",
            (404, "text/plain", "unknown upstream 'nope'"),
            id="unknown",
        ),
        pytest.param({}, "*/*", (400, "text/plain", "give the series to trace"), id="no series"),
        pytest.param(
            {}, BROWSER_ACCEPT, (200, "text/html", '<input type="text" name="series" value=""'), id="form"
        ),
        pytest.param(
            {"series": "a{b=c}"}, "*/*", (400, "text/plain", "series: expected a quoted label"), id="bad"
        ),
        pytest.param(
            {"series": "a{b=c}"}, BROWSER_ACCEPT, (400, "text/html", "expected a quoted label"), id="bad html"
        ),
        pytest.param(
            {"series": "a 1 2 3"}, "*/*", (400, "text/plain", "expected a value and an optional"), id="value"
        ),
    ],
)
async def test_trace_errors(pki, tmp_path, params, accept, expected):
    """An unknown upstream is 404; a missing or unreadable series is 400 saying what is wrong."""
    status, content_type, fragment = expected
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), KUBE_RULES), tmp_path) as relay,
    ):
        answer = await get(f"{relay.base_url}/relay/relabel", accept, **params)
    assert answer[:2] == (status, content_type)
    assert fragment in answer[2]


async def never_ending(request):
    return await trickle(request, b"a 1\n", 0.2)


@dataclass(frozen=True)
class Failure:
    """A debug scrape that fails: the upstream's answer, the relay's client certificate, the page's name."""

    handler: Handler
    status: int
    fragment: str
    stranger: bool = False  # a client certificate from a CA the upstream does not trust
    name: str = "test"


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(Failure(body_handler(b"oops", status=500), 502, "HTTP 500"), id="http status"),
        pytest.param(Failure(body_handler(b"a 1\nb{c=d} 2\n"), 502, "line 2"), id="invalid body"),
        pytest.param(Failure(never_ending, 504, "deadline"), id="deadline"),
        pytest.param(
            Failure(body_handler(BODY), 502, "certificate", stranger=True), id="refused certificate"
        ),
        pytest.param(Failure(body_handler(BODY), 404, "unknown upstream 'nope'", name="nope"), id="unknown"),
    ],
)
@pytest.mark.parametrize("answer", ["html", "json", "text"])
async def test_summary_page_failures(pki, tmp_path, failure, answer):
    """A failing scrape gets its explanation with 502 or 504, in the form asked for; an unknown name 404."""
    files = pki.client_files("stranger", Pki(tmp_path / "other").client_cert) if failure.stranger else None
    async with (
        running_upstream(pki.server_context(), failure.handler) as upstream,
        running_relay(
            config_yaml(upstream.url, files or pki.client_files(), "    timeout: 1s\n"), tmp_path
        ) as relay,
    ):
        status, content_type, text = await get(
            f"{relay.base_url}/relay/debug/relabel/{failure.name}", format=answer
        )
    assert status == failure.status
    assert failure.fragment in text
    if status != 404:
        assert content_type == {"html": "text/html", "json": "application/json", "text": "text/plain"}[answer]
        assert "oops" not in text  # never the upstream's body


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),
        ("*/*", False),
        ("", False),
        ("text/plain", False),
        ("text/html", True),
        ("text/*;q=0.5, text/html", True),
        ("text/html;q=0.5, text/plain", False),
        ("text/html;q=0, */*", False),
    ],
)
def test_prefers_html(accept, html):
    """HTML only for a client that ranks text/html above text/plain."""
    assert prefers_html(accept) is html


async def test_one_summary_at_a_time(pki, tmp_path):
    """While one summary's scrape runs, a second request is told to wait (503) instead of asking the upstream
    again; afterwards a summary runs again."""
    asked, gate = asyncio.Event(), asyncio.Event()

    async def held(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        asked.set()
        await gate.wait()
        return await body_handler(BODY)(request)

    async with (
        running_upstream(pki.server_context(), held) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        url = f"{relay.base_url}/relay/debug/relabel/test"
        first = asyncio.create_task(get(url, format="json"))
        await asyncio.wait_for(asked.wait(), 10)
        second = await get(url, format="json")
        gate.set()
        done = await first
        third = await get(url, format="json")
    assert second[0] == 503
    assert "another relabel summary is running" in second[2]
    assert (done[0], third[0]) == (200, 200)
    assert len(upstream.requests) == 2
