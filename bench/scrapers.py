"""Benchmark 5 (`peers`): vmagent and Prometheus beside the relay, on the same mTLS upstream and rules.

One nginx serves the e2e benchmark's body as a static file over TLS with a client certificate required.
Each scraper then scrapes it, one after the other so that they never share the CPU, with the kube-prometheus
rules as `metric_relabel_configs`:

- vmagent (stream parsing on, remote write to a sink in this process that discards what it gets), timed by
  its own `vm_promscrape_scrape_duration_seconds` histogram: each scrape is the growth of `_sum` while
  `_count` grows by one, read from vmagent's /metrics;
- Prometheus, timed by its `scrape_duration_seconds` series, read back with /api/v1/query;
- the relay, scraped by this process's aiohttp client (request sent → last byte read);
- Prometheus scraping a fresh relay (the rules then run in the relay, none in Prometheus).

The first scrape of each is reported apart: it creates every series (Prometheus' head, the relay's memo).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.client import scrape
from bench.endtoend import RELAY_CACHE_SIZE, RELAY_TIMEOUT, relay_config
from bench.nginx import mtls_file_server, running_nginx
from bench.payloads import apiserver_body, replicated_body, sample_count
from bench.pki import PkiFiles, write_pki
from bench.processes import free_port, running_process, write_file
from bench.relayproc import RelayProcess, running_relay
from bench.rulesets import KUBE_PROMETHEUS, NONE, RuleSet
from bench.tables import Table, megabytes, ratio, seconds

PEERS_BIN = Path(__file__).resolve().parents[1] / ".peers" / "bin"
PEERS_DEBS = PEERS_BIN.parent / "debs"
JOB = "upstream"
REFERENCE = "vmagent"
# vmagent rejects bodies above -promscrape.maxScrapeSize (16 MiB by default, in stream mode too); Prometheus
# has no limit unless body_size_limit is set.
VMAGENT_MAX_SCRAPE_BYTES = 2**30
# The series vmagent 1.79 adds to every scrape, pushed with the samples: up, scrape_duration_seconds,
# scrape_samples_scraped, scrape_samples_post_metric_relabeling, scrape_series_added, scrape_timeout_seconds
# (and scrape_samples_limit, only with a sample_limit).
VMAGENT_AUTO_SERIES = 6
POLL_SECONDS = 0.25
# vmagent counts pushed rows when it flushes a block to remote write, at the latest -remoteWrite.flushInterval
# (1 s) after the rows came: a scrape's last rows show a moment after its duration does.
VMAGENT_SETTLE_SECONDS = 1.5
RELAY_PAUSE_SECONDS = 1.0


@dataclass(frozen=True)
class PeersSettings:
    """The body's size, how many scrapes follow the first, and the scrapers' interval and timeout."""

    payload_bytes: int
    later_scrapes: int
    interval_seconds: int = 5
    timeout_seconds: int = 4

    @property
    def scrapes(self) -> int:
        """The first scrape and the later ones."""
        return 1 + self.later_scrapes

    def wait_seconds(self) -> float:
        """How long a scraper with an interval may take for every scrape: a first one within an interval
        (both scatter their targets over it), the later ones, a timeout, and a margin."""
        return self.interval_seconds * (self.scrapes + 1) + self.timeout_seconds + 5


@dataclass(frozen=True)
class TimedScrape:
    """One scrape as the scraper itself reports it; samples are None where the clock does not give them."""

    seconds: float
    ok: bool
    samples_in: int | None = None
    samples_out: int | None = None


@dataclass
class PeerRun:
    """One scraper's row: its scrapes in order, what timed them, and notes on how it ran."""

    name: str
    clock: str
    scrapes: list[TimedScrape] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def peer_binary(name: str) -> Path:
    """A peer's binary on PATH (`make bench` puts .peers/bin first), else the one fetch-peers linked."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    if (PEERS_BIN / name).exists():
        return PEERS_BIN / name
    raise FileNotFoundError(f"{name} not found: run scripts/fetch-peers (or `make bench`)")


def scrape_config(settings: PeersSettings, target: str, rule_set: RuleSet, *, pki: PkiFiles | None) -> str:
    """A Prometheus-format configuration with one job scraping `target`, mTLS when `pki` is given."""
    job = f"  - job_name: {JOB}\n"
    if pki is not None:
        job += (
            "    scheme: https\n    tls_config:\n"
            f"      ca_file: {pki.server_ca}\n      cert_file: {pki.client_cert}\n"
            f"      key_file: {pki.client_key}\n"
        )
    job += f'    static_configs:\n      - targets: ["{target}"]\n'
    job += f"    metric_relabel_configs:\n{rule_set.indented(6)}\n"
    return (
        f"global:\n  scrape_interval: {settings.interval_seconds}s\n"
        f"  scrape_timeout: {settings.timeout_seconds}s\nscrape_configs:\n{job}"
    )


def _vmagent_config(settings: PeersSettings, target: str, pki: PkiFiles) -> str:
    """The Prometheus configuration with vmagent's per-job stream parsing switched on."""
    text = scrape_config(settings, target, KUBE_PROMETHEUS, pki=pki)
    return text.replace(f"  - job_name: {JOB}\n", f"  - job_name: {JOB}\n    stream_parse: true\n", 1)


async def run_peers(settings: PeersSettings, workdir: Path) -> Table:
    """Serve the body from an mTLS nginx; vmagent, Prometheus and the relay scrape it in turn; one table."""
    started = time.monotonic()
    body = replicated_body(apiserver_body(), settings.payload_bytes)
    body_file = write_file(workdir / "payload.prom", body)
    pki = write_pki(workdir / "pki")
    upstream = mtls_file_server(pki, body_file)
    target = f"127.0.0.1:{upstream.port}"
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_nginx(workdir / "nginx-upstream", [upstream]))
        # The relay's body is read as it comes (as e2e reads it); the peers' APIs answer gzipped.
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300), auto_decompress=False)
        )
        api = await stack.enter_async_context(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)))
        runs = [
            await _vmagent(settings, workdir / "vmagent", target, pki, api),
            await _prometheus(
                settings,
                workdir / "prometheus",
                scrape_config(settings, target, KUBE_PROMETHEUS, pki=pki),
                "Prometheus → upstream",
                api,
            ),
            await _relay_by_client(settings, workdir / "relay", f"https://{target}/metrics", pki, session),
        ]
        async with running_relay(
            relay_config(f"https://{target}/metrics", pki, KUBE_PROMETHEUS), workdir / "relay-for-prometheus"
        ) as relay:
            runs.append(
                await _prometheus(
                    settings,
                    workdir / "prometheus-relay",
                    scrape_config(settings, relay.base_url.removeprefix("http://"), NONE, pki=None),
                    "Prometheus → relay → upstream",
                    api,
                )
            )
    return _table(settings, body_size=len(body), samples=sample_count(body), runs=runs, started=started)


# vmagent


@asynccontextmanager
async def _discarding_sink() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A remote-write endpoint on 127.0.0.1 that reads each body and drops it: its URL and counts."""
    counts = {"requests": 0, "bytes": 0}

    async def write(request: web.Request) -> web.Response:
        data = await request.read()
        counts["requests"] += 1
        counts["bytes"] += len(data)
        return web.Response(status=204)

    app = web.Application(client_max_size=2**30)
    app.router.add_post("/api/v1/write", write)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://127.0.0.1:{port}/api/v1/write", counts
    finally:
        await runner.cleanup()
        sock.close()


async def _vmagent(
    settings: PeersSettings, workdir: Path, target: str, pki: PkiFiles, session: aiohttp.ClientSession
) -> PeerRun:
    config = write_file(workdir / "vmagent.yml", _vmagent_config(settings, target, pki))
    port = free_port()
    run = PeerRun(
        f"vmagent {_vmagent_version()} → upstream",
        "own vm_promscrape_scrape_duration_seconds (/metrics)",
    )
    async with _discarding_sink() as (sink_url, sink):
        command = [
            str(peer_binary("vmagent")),
            f"-promscrape.config={config}",
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-remoteWrite.url={sink_url}",
            f"-remoteWrite.tmpDataPath={workdir / 'remote-write-queue'}",
            f"-promscrape.maxScrapeSize={VMAGENT_MAX_SCRAPE_BYTES}",
            "-loggerLevel=WARN",
        ]
        async with running_process(command, [port], workdir / "vmagent.log"):
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            previous = await _vmagent_counters(session, metrics_url)
            deadline = time.monotonic() + settings.wait_seconds()
            while len(run.scrapes) < settings.scrapes and time.monotonic() < deadline:
                await asyncio.sleep(POLL_SECONDS)
                if (await _vmagent_counters(session, metrics_url))["count"] == previous["count"]:
                    continue
                # The scrape is timed; wait for the rest of its rows (the next scrape is seconds away).
                await asyncio.sleep(VMAGENT_SETTLE_SECONDS)
                current = await _vmagent_counters(session, metrics_url)
                done = int(current["count"] - previous["count"])
                rows = (current["pushed"] - previous["pushed"]) / done - VMAGENT_AUTO_SERIES
                failed = current["failed"] > previous["failed"]
                run.scrapes += [
                    TimedScrape(
                        (current["sum"] - previous["sum"]) / done,
                        not failed,
                        round((current["samples"] - previous["samples"]) / done),
                        round(rows),
                    )
                ] * done
                previous = current
            run.notes += await _vmagent_target_notes(session, port)
    run.notes.append(
        f"remote write: {sink['requests']} requests, {megabytes(sink['bytes'])} MB, read and discarded "
        "by a sink in the benchmark process"
    )
    return run


async def _vmagent_counters(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The counters of vmagent's /metrics that time and count its scrapes (0 before the first one)."""
    names = {
        "vm_promscrape_scrape_duration_seconds_sum": "sum",
        "vm_promscrape_scrape_duration_seconds_count": "count",
        "vm_promscrape_scraped_samples_sum": "samples",
        "vm_promscrape_scrapes_failed_total": "failed",
        "vmagent_remotewrite_global_rows_pushed_before_relabel_total": "pushed",
    }
    counters = dict.fromkeys(names.values(), 0.0)
    async with session.get(url) as response:
        text = await response.text()
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series in names:
            counters[names[series]] = float(value)
    return counters


async def _vmagent_target_notes(session: aiohttp.ClientSession, port: int) -> list[str]:
    """vmagent's own view of the target: its health and last error, if it had one."""
    async with session.get(f"http://127.0.0.1:{port}/api/v1/targets") as response:
        targets = (await response.json())["data"]["activeTargets"]
    return [
        f"vmagent's target page: health {target['health']}, last error {target['lastError']!r}"
        for target in targets
        if target.get("lastError")
    ]


def _vmagent_version() -> str:
    """vmagent's version; Debian's build reports none (`-version` prints an empty line), so the package's."""
    binary = peer_binary("vmagent")
    result = subprocess.run(
        [str(binary), "-version"], capture_output=True, text=True, check=False, timeout=10
    )
    reported = result.stdout.strip()
    if reported:
        return reported
    if binary.resolve().is_relative_to(PEERS_BIN.parent.resolve()):
        debs = sorted(PEERS_DEBS.glob("victoria-metrics_*.deb"))
        if debs:
            return debs[-1].name.split("_")[1].split("+")[0]
    return "(version unknown)"


# Prometheus


async def _prometheus(
    settings: PeersSettings, workdir: Path, config_text: str, name: str, session: aiohttp.ClientSession
) -> PeerRun:
    config = write_file(workdir / "prometheus.yml", config_text)
    port = free_port()
    command = [
        str(peer_binary("prometheus")),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    run = PeerRun(
        name.replace("Prometheus", f"Prometheus {_prometheus_version()}", 1),
        "own scrape_duration_seconds (/api/v1/query)",
    )
    api = f"http://127.0.0.1:{port}/api/v1/query"
    async with running_process(command, [port], workdir / "prometheus.log"):
        deadline = time.monotonic() + settings.wait_seconds()
        count_query = f'count_over_time(scrape_duration_seconds{{job="{JOB}"}}[1h])'
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            result = await _query(session, api, count_query)
            if result and float(result[0]["value"][1]) >= settings.scrapes:
                break
        series = {
            metric: await _query(session, api, f'{metric}{{job="{JOB}"}}[1h]')
            for metric in (
                "scrape_duration_seconds",
                "up",
                "scrape_samples_scraped",
                "scrape_samples_post_metric_relabeling",
            )
        }
    by_time: dict[str, dict[float, float]] = {
        metric: {float(ts): float(value) for ts, value in result[0]["values"]} if result else {}
        for metric, result in series.items()
    }
    for timestamp in sorted(by_time["scrape_duration_seconds"])[: settings.scrapes]:
        scraped = by_time["scrape_samples_scraped"].get(timestamp)
        kept = by_time["scrape_samples_post_metric_relabeling"].get(timestamp)
        run.scrapes.append(
            TimedScrape(
                by_time["scrape_duration_seconds"][timestamp],
                by_time["up"].get(timestamp) == 1,
                None if scraped is None else round(scraped),
                None if kept is None else round(kept),
            )
        )
    return run


async def _query(session: aiohttp.ClientSession, url: str, query: str) -> list[dict[str, object]]:
    async with session.get(url, params={"query": query}) as response:
        payload = await response.json()
    if payload.get("status") != "success":
        raise RuntimeError(f"Prometheus query {query!r} failed: {payload}")
    result: list[dict[str, object]] = payload["data"]["result"]
    return result


def _prometheus_version() -> str:
    result = subprocess.run(
        [str(peer_binary("prometheus")), "--version"], capture_output=True, text=True, check=False, timeout=10
    )
    words = (result.stdout or result.stderr).split()
    return words[2].split("+")[0] if len(words) > 2 and words[1] == "version" else "(version unknown)"


# The relay, read by this process


async def _relay_by_client(
    settings: PeersSettings, workdir: Path, upstream_url: str, pki: PkiFiles, session: aiohttp.ClientSession
) -> PeerRun:
    run = PeerRun("relay → upstream, read by the benchmark", "aiohttp client: request sent → last byte")
    async with running_relay(relay_config(upstream_url, pki, KUBE_PROMETHEUS), workdir) as relay:
        for index in range(settings.scrapes):
            if index:
                await asyncio.sleep(RELAY_PAUSE_SECONDS)
            received, relayed = await _relay_samples(session, relay)
            result = await scrape(session, relay.metrics_url)
            run.scrapes.append(
                TimedScrape(
                    result.total_seconds,
                    result.ok,
                    round(
                        await relay.settled_metric(session, "metrics_relay_samples_received_total", received)
                        - received
                    ),
                    round(await relay.self_metric(session, "metrics_relay_samples_relayed_total") - relayed),
                )
            )
            if not result.ok:
                run.notes.append(f"relay scrape {index + 1} failed: {result.error}")
    return run


async def _relay_samples(session: aiohttp.ClientSession, relay: RelayProcess) -> tuple[float, float]:
    with contextlib.suppress(aiohttp.ClientError):
        return (
            await relay.self_metric(session, "metrics_relay_samples_received_total"),
            await relay.self_metric(session, "metrics_relay_samples_relayed_total"),
        )
    return 0.0, 0.0


# The table


def _samples(run: PeerRun) -> str:
    pairs = {(one.samples_in, one.samples_out) for one in run.scrapes if one.ok}
    if not pairs:
        return "-"
    text = ", ".join(
        f"{'?' if into is None else f'{into:,}'}→{'?' if out is None else f'{out:,}'}"
        for into, out in sorted(pairs, key=str)
    )
    return text if len(pairs) == 1 else f"varies: {text}"


def _table(
    settings: PeersSettings, *, body_size: int, samples: int, runs: list[PeerRun], started: float
) -> Table:
    table = Table(
        f"5. Peers: vmagent, Prometheus and the relay scraping {megabytes(body_size)} MB from an mTLS "
        "nginx, kube-prometheus rules",
        [
            "scraper",
            "1st scrape",
            "later: median",
            "min",
            "max",
            f"1st x {REFERENCE}",
            f"later x {REFERENCE}",
            "MB/s (later)",
            "samples in→out",
            "scrapes ok",
            "timed by",
        ],
    )

    def later(run: PeerRun) -> list[float]:
        return [one.seconds for one in run.scrapes[1:] if one.ok]

    reference = next(run for run in runs if run.name.startswith(REFERENCE))
    reference_first = reference.scrapes[0].seconds if reference.scrapes and reference.scrapes[0].ok else 0.0
    reference_later = statistics.median(later(reference)) if later(reference) else 0.0
    for run in runs:
        first = run.scrapes[0] if run.scrapes else None
        times = later(run)
        median = statistics.median(times) if times else 0.0
        table.add(
            run.name,
            "-" if first is None else seconds(first.seconds) + ("" if first.ok else " (failed)"),
            seconds(median) if times else "-",
            seconds(min(times)) if times else "-",
            seconds(max(times)) if times else "-",
            ratio(first.seconds, reference_first) if first is not None and first.ok else "-",
            ratio(median, reference_later) if times else "-",
            f"{body_size / median / 1e6:.0f}" if times else "-",
            _samples(run),
            f"{sum(one.ok for one in run.scrapes)}/{settings.scrapes}",
            run.clock,
        )
    table.notes += [
        f"upstream body: {body_size:,} bytes, {samples:,} samples (the e2e benchmark's body: the apiserver "
        "capture, every series repeated with a `replica` label), served by nginx as a static file over TLS, "
        "ssl_verify_client on; every scraper presents the same client certificate",
        f"each scraper alone in turn, {settings.scrapes} scrapes (the 1st, then {settings.later_scrapes} "
        f"later ones); vmagent and Prometheus every {settings.interval_seconds} s with a "
        f"{settings.timeout_seconds} s timeout, the relay read by the benchmark {RELAY_PAUSE_SECONDS:g} s "
        "after the previous body ended; ratios are against vmagent's 1st scrape and its median later scrape",
        "vmagent: `stream_parse: true` in the job, remote write to a sink in the benchmark process that "
        f"discards the data, -promscrape.maxScrapeSize={VMAGENT_MAX_SCRAPE_BYTES} (the default 16 MiB "
        "fails bigger bodies, in stream mode too); each scrape's time is the growth of "
        "vm_promscrape_scrape_duration_seconds_sum on its /metrics while _count grows by one; samples out "
        "are rows pushed to remote write less its "
        f"{VMAGENT_AUTO_SERIES} scrape_* series",
        "Prometheus: a fresh TSDB in a temporary folder for each row; its scrape_duration_seconds covers "
        "request, body, parsing, relabeling and appending to the head; samples in→out are "
        "scrape_samples_scraped→scrape_samples_post_metric_relabeling",
        f"relay: `python -m relay` child process, relabel_cache_size {RELAY_CACHE_SIZE:,}, timeout "
        f"{RELAY_TIMEOUT} (Prometheus' X-Prometheus-Scrape-Timeout-Seconds bounds it to the scrape timeout "
        "less 0.5 s); samples in→out are the growth of metrics_relay_samples_received_total→"
        "metrics_relay_samples_relayed_total; the Prometheus → relay row starts a fresh relay, so its 1st "
        "scrape is cold there too",
    ]
    for run in runs:
        table.notes += [f"{run.name}: {note}" for note in run.notes]
    table.notes.append(f"benchmark run time {time.monotonic() - started:.0f} s")
    return table
