"""The landing page: its formatting for people, and a live relay's page as headless Chromium renders it."""

from __future__ import annotations

import asyncio
import datetime
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest

from relay import landing
from relay.landing import human_bytes, human_duration, relative_time
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

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # git-ignored; kept for a person to look at
SECRET_TOKEN = "s3cr3t-bearer-token-4711"  # must never reach the page
BODY = (
    b'# TYPE up gauge\nup 1\n# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total{mode="idle"} 3\n'
)
NOW = 1_800_000_000.0
AGO = r"(just now|\d+ [a-z]+ ago)"  # a moment of the test, as the page tells it
DAY = 86400.0


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (NOW, "just now"),
        (NOW - 0.4, "just now"),
        (NOW - 12, "12 s ago"),
        (NOW - 59.9, "59 s ago"),
        (NOW - 60, "1 min ago"),
        (NOW - 150, "2 min ago"),
        (NOW - 3 * 3600 - 1, "3 h ago"),
        (NOW - DAY, "1 day ago"),
        (NOW - 3 * DAY, "3 days ago"),
        (NOW + 30, "in 30 s"),
        (NOW + 12 * DAY + 3600, "in 12 days"),
        (NOW + 365 * DAY, "in 1 year"),
        (NOW + 10 * 365 * DAY + DAY, "in 10 years"),
    ],
)
def test_relative_time_reads_as_a_person_says_it(moment, expected):
    """A moment is told relative to now, in the largest whole unit, past or future."""
    assert relative_time(moment, NOW) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, "0 ms"),
        (0.0123, "12 ms"),
        (0.9994, "999 ms"),
        (2.5, "2.5 s"),
        (12.34, "12.3 s"),
        (65, "1 min 5 s"),
    ],
)
def test_human_duration(seconds, expected):
    """Durations under a second in milliseconds, then seconds, then minutes."""
    assert human_duration(seconds) == expected


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (200 * 1024, "200 KiB"), (31 << 20, "31 MiB"),
     (5 << 40, "5120 GiB")],
)  # fmt: skip
def test_human_bytes(count, expected):
    """Sizes in bytes, then in base-2 units, with one decimal only while it matters."""
    assert human_bytes(count) == expected


@dataclass
class Section:
    """One upstream's part of the page: its heading, and each row's label and text."""

    heading: str = ""
    rows: dict[str, str] = field(default_factory=dict)


@dataclass
class Dom:
    """What the tests read of a page: its text, the upstream sections by id, links, external URLs."""

    text: str = ""
    sections: dict[str, Section] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)


class _DomReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.dom = Dom()
        self._section: Section | None = None
        self._inside = ""  # "h2", "dt", "dd" or "style" while in one of them
        self._label = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "section":
            self._section = self.dom.sections.setdefault(values.get("id", ""), Section())
        if tag in ("h2", "dt", "dd", "style"):
            self._inside = tag
        if tag == "dt":
            self._label = ""
        if tag == "dd" and self._section is not None:
            self._section.rows[self._label] = ""
        if tag == "a" and "href" in values:
            self.dom.links.append(values["href"])
        for name in ("src", "href", "action", "srcset"):
            if name in values and (urlsplit(values[name]).scheme or values[name].startswith("//")):
                self.dom.external.append(f"<{tag} {name}={values[name]}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._inside:
            self._inside = ""
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        self.dom.text += data
        if self._inside == "style" and re.search(r"url\(|@import", data):
            self.dom.external.append(f"style: {data.strip()[:80]}")
        if self._section is None:
            return
        if self._inside == "h2":
            self._section.heading += data
        elif self._inside == "dt":
            self._label += data
        elif self._inside == "dd":
            self._section.rows[self._label] += data


def read_dom(html: str) -> Dom:
    """The parts of a page the tests check."""
    reader = _DomReader()
    reader.feed(html)
    reader.close()
    return reader.dom


async def run_chromium(chromium: str, *arguments: str) -> str:
    """Run the headless Chromium wrapper; its standard output, or a failure with what it said."""
    process = await asyncio.create_subprocess_exec(
        chromium, *arguments, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=45)
    assert process.returncode == 0, stderr.decode(errors="replace")
    return stdout.decode()


def two_upstreams(url: str, pki: Pki, directory: Path) -> str:
    """A healthy upstream (params, a bearer token, one rule) and one whose client certificate expired."""
    good = pki.client_files("good")
    token = directory / "token"
    token.write_text(SECRET_TOKEN, encoding="utf-8")
    expired_cert = pki.client_ca.issue_cert(
        "expired@test",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    expired = pki.client_files("expired", expired_cert)
    return f"""upstreams:
  - name: ack-control-plane
    url: {url}
    params:
      hosting: ["true"]
    bearer_token_file: {token}
    tls_config: {{ca_file: {good.ca_file}, cert_file: {good.cert_file}, key_file: {good.key_file}}}
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: node_cpu_seconds_total
        action: drop
  - name: expired-cert
    url: {url}
    tls_config: {{ca_file: {expired.ca_file}, cert_file: {expired.cert_file}, key_file: {expired.key_file}}}
"""


async def test_landing_page_in_headless_chromium(tmp_path):
    """Chromium renders a live relay's page: each upstream's URL with its query, health, explanation, working
    relative links, nothing loaded from elsewhere and no secret; the screenshot is kept in tests/artifacts."""
    chromium = require_tool("chromium")
    pki = Pki(tmp_path)
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(two_upstreams(upstream.url, pki, tmp_path), tmp_path) as relay,
        aiohttp.ClientSession() as session,
    ):
        for name in ("ack-control-plane", "expired-cert"):
            async with session.get(f"{relay.base_url}/metrics/{name}") as response:
                await response.read()
        page_url = f"{relay.base_url}/"
        dom = read_dom(await run_chromium(chromium, "--dump-dom", page_url))
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "landing.png"
        await run_chromium(chromium, f"--screenshot={screenshot}", "--window-size=1100,1300", page_url)
        statuses = {}
        for href in dom.links:  # followed as a browser follows them
            async with session.get(urljoin(page_url, href), headers={"Accept": "text/html"}) as response:
                statuses[href] = response.status
    print(f"landing page screenshot: {screenshot}")
    healthy, failing = dom.sections["upstream-ack-control-plane"], dom.sections["upstream-expired-cert"]
    assert healthy.heading == "ack-control-plane up"
    assert healthy.rows["URL"] == f"{upstream.url}?hosting=true"
    assert re.fullmatch(rf"ok {AGO}, \d+ B in \d+ ms", healthy.rows["last scrape"])
    assert re.fullmatch(
        rf"ok {AGO}, 2 samples in, 1 out \(1 dropped\), \d+ B received in \d+ ms",
        healthy.rows["upstream request"],
    )
    assert "expires in" in healthy.rows["client certificate"]
    assert "expires in" in healthy.rows["CA certificate"]
    assert re.fullmatch(rf"loaded {AGO}", healthy.rows["credentials"])
    assert healthy.rows["relabel rules"] == "1 metric_relabel_configs rule"
    assert failing.heading == "expired-cert failing: tls"
    assert failing.rows["URL"] == upstream.url
    assert "the client certificate expired at 2021-01-01T00:00:00Z" in failing.rows["last scrape"]
    assert "what to do: renew the client certificate" in failing.rows["last scrape"]
    assert re.search(r"expired \d+ years? ago \(2021-01-01 00:00 UTC\)", failing.rows["client certificate"])
    assert failing.rows["credentials"].endswith("but the client certificate expired at 2021-01-01T00:00:00Z")
    assert "last reload successful" in dom.text
    assert statuses == {
        "metrics": 200,
        "metrics/ack-control-plane": 200,
        "relay/debug/relabel/ack-control-plane": 200,
        "relay/relabel?upstream=ack-control-plane": 200,  # the form to trace a series
        "metrics/expired-cert": 502,  # the failing upstream: the relay answers, it does not 404
        "relay/debug/relabel/expired-cert": 502,
        "relay/relabel?upstream=expired-cert": 200,
        "relay/metrics": 200,
        "-/healthy": 200,
        "-/ready": 200,
    }
    assert not [href for href in dom.links if href.startswith("/")]  # relative: they work behind a prefix
    assert dom.external == []
    for secret in (SECRET_TOKEN, "PRIVATE KEY", "BEGIN"):
        assert secret not in dom.text
    assert screenshot.stat().st_size > 10_000


async def test_failed_reload_shows_its_error_escaped(tmp_path):
    """A failed reload shows on the page with its error, whose markup stays text."""
    pki = Pki(tmp_path)
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(two_upstreams(upstream.url, pki, tmp_path), tmp_path) as relay,
        aiohttp.ClientSession() as session,
    ):
        relay.config_path.write_text("upstreams:\n  - name: <script>alert(1)</script>\n", encoding="utf-8")
        async with session.post(f"{relay.base_url}/-/reload") as response:
            assert response.status == 500
        async with session.get(f"{relay.base_url}/") as response:
            html = await response.text()
    dom = read_dom(html)
    assert "the last reload failed" in dom.text
    assert "<script>alert(1)</script>" in dom.text  # shown as text ...
    assert "<script>" not in html  # ... never as markup
    assert dom.sections["upstream-ack-control-plane"].heading == "ack-control-plane not scraped yet"  # kept


def break_cert_file(files: ClientFiles, pki: Pki) -> None:
    files.cert_file.write_bytes(b"garbage")


def rotate_to_expired(files: ClientFiles, pki: Pki) -> None:
    expired = pki.client_ca.issue_cert(
        "expired@test",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    expired.cert_chain_pems[0].write_to_path(str(files.cert_file))
    expired.private_key_pem.write_to_path(str(files.key_file))


def remove_key_file(files: ClientFiles, pki: Pki) -> None:
    files.key_file.unlink()


@pytest.mark.parametrize(
    ("rotation", "reason"),
    [
        (break_cert_file, "tls_config.cert_file: not a PEM certificate"),
        (rotate_to_expired, "tls_config.cert_file: the client certificate expired at 2021-01-01T00:00:00Z"),
        (remove_key_file, "tls_config.key_file: cannot read"),
    ],
)
async def test_refused_rotation_shows_its_reason(tmp_path, rotation, reason):
    """A rotated credential set that is refused shows with its reason while the last good set stays in use."""
    pki = Pki(tmp_path)
    files = pki.client_files()
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
        aiohttp.ClientSession() as session,
    ):
        rotation(files, pki)
        async with session.get(f"{relay.base_url}/metrics") as response:
            assert response.status == 200  # the last good set
            await response.read()
        async with session.get(f"{relay.base_url}/") as response:
            section = read_dom(await response.text()).sections["upstream-test"]
    assert section.heading == "test up"
    assert re.fullmatch(
        rf"rotation refused: client credentials unusable: {re.escape(reason)}.*; "
        rf"the last good set \(loaded {AGO}\) stays in use",
        section.rows["credentials"],
    )
    assert "expires in" in section.rows["client certificate"]  # the good set's certificate


@pytest.mark.parametrize(
    ("days_left", "marking", "told"),
    [
        (30, "", "expires in 30 days"),
        (3, ' class="warn"', "expires in 3 days"),
        (-1, ' class="bad"', "expired 1 day ago"),
    ],
)
async def test_certificate_expiry_is_marked_as_it_nears(tmp_path, days_left, marking, told):
    """Under 7 days left (as the alert) the expiry is marked amber, once past it red."""
    pki = Pki(tmp_path)
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        not_after = relay.runtime.upstreams["test"].client.credentials.last_good.certificate.not_after
        html = landing.render(relay.runtime, now=not_after.timestamp() - days_left * DAY)
    row = re.search(r"<dt>client certificate</dt><dd>(.*?)</dd>", html)
    assert row is not None
    verb, _, moment = told.partition(" ")
    assert re.search(rf'{verb} <time datetime="[^"]+" title="[^"]+"{marking}>{moment}</time>', row[1])


async def test_a_failed_scrape_shows_on_the_page_escaped(tmp_path):
    """Before a scrape the page says so; after a failing one it names the reason, with the upstream's answer
    escaped, links to the upstream and the relay's metrics, and shows no key material."""
    pki = Pki(tmp_path)
    async with (
        running_upstream(pki.server_context(), body_handler(b"<script>", status=500)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), name="ack-one"), tmp_path) as relay,
    ):
        before = await request_text(f"{relay.base_url}/")
        await request_text(f"{relay.base_url}/metrics")
        status, content_type, page = await request_text(f"{relay.base_url}/")
    assert "not scraped yet" in before[2]
    assert status == 200
    assert content_type.startswith("text/html")
    assert 'href="metrics/ack-one"' in page
    assert 'href="relay/metrics"' in page
    assert "failed (http_status)" in page
    assert "<script>" not in page
    assert "BEGIN" not in page  # no certificate or key material
