"""Benchmark 2: a big body from an mTLS nginx through the relay, beside nginx and aiohttp passthrough proxies.

Every path serves the same nginx upstream (TLS 1.3, client certificate required); the client reads each body
to its end. Runs alternate between the paths so that drifts of the machine hit them alike.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.client import Scrape, scrape
from bench.nginx import mtls_file_server, passthrough_proxy, running_nginx
from bench.payloads import apiserver_body, replicated_body, sample_count
from bench.pki import PkiFiles, write_pki
from bench.processes import free_port, running_process, write_file
from bench.relayproc import running_relay
from bench.rulesets import KUBE_PROMETHEUS, NONE, RuleSet, upstream_yaml
from bench.tables import Table, megabytes, ratio, seconds

RELAY_CACHE_SIZE = 1_000_000  # holds every series of the built body, so later scrapes are warm
RELAY_TIMEOUT = "120s"
REFERENCE = "nginx proxy (proxy_buffering on)"


@dataclass(frozen=True)
class EndToEndSettings:
    """Size of the upstream body and how many alternating rounds are timed."""

    payload_bytes: int
    rounds: int


def relay_config(upstream_url: str, pki: PkiFiles, rule_set: RuleSet) -> str:
    """A relay configuration for the nginx upstream with `rule_set` and a memo that holds the body."""
    extra = (
        pki.relay_tls_yaml() + f"    timeout: {RELAY_TIMEOUT}\n    relabel_cache_size: {RELAY_CACHE_SIZE}\n"
    )
    return upstream_yaml(upstream_url, rule_set, extra)


async def run_end_to_end(settings: EndToEndSettings, workdir: Path) -> Table:
    """Start the upstream, the proxies and two relays; scrape each path in turn; one table."""
    body = replicated_body(apiserver_body(), settings.payload_bytes)
    body_file = write_file(workdir / "payload.prom", body)
    pki = write_pki(workdir / "pki")
    upstream = mtls_file_server(pki, body_file)
    upstream_url = f"https://127.0.0.1:{upstream.port}/metrics"
    buffered = passthrough_proxy(pki, upstream.port, buffering=True)
    unbuffered = passthrough_proxy(pki, upstream.port, buffering=False)
    aiohttp_port = free_port()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_nginx(workdir / "nginx-upstream", [upstream]))
        await stack.enter_async_context(running_nginx(workdir / "nginx-proxy", [buffered, unbuffered]))
        await stack.enter_async_context(
            running_process(
                [
                    sys.executable,
                    "-m",
                    "bench.passthrough",
                    str(aiohttp_port),
                    upstream_url,
                    str(pki.server_ca),
                    str(pki.client_cert),
                    str(pki.client_key),
                ],
                [aiohttp_port],
                workdir / "passthrough.log",
            )
        )
        relays = {}
        for rule_set in (KUBE_PROMETHEUS, NONE):
            relay = await stack.enter_async_context(
                running_relay(relay_config(upstream_url, pki, rule_set), workdir / f"relay-{rule_set.name}")
            )
            relays[f"relay, {rule_set.name}"] = relay
        paths = {
            REFERENCE: f"http://127.0.0.1:{buffered.port}/metrics",
            "nginx proxy (proxy_buffering off)": f"http://127.0.0.1:{unbuffered.port}/metrics",
            "aiohttp passthrough (no parsing)": f"http://127.0.0.1:{aiohttp_port}/metrics",
            **{name: relay.metrics_url for name, relay in relays.items()},
        }
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300), auto_decompress=False)
        )
        first = {name: await _checked(session, name, url) for name, url in paths.items()}
        timed: dict[str, list[Scrape]] = defaultdict(list)
        for _ in range(settings.rounds):
            for name, url in paths.items():
                timed[name].append(await _checked(session, name, url))
        memo = {
            name: await relay.self_metric(session, "metrics_relay_relabel_cache_entries")
            for name, relay in relays.items()
        }
    return _table(
        settings, body_size=len(body), samples=sample_count(body), first=first, timed=timed, memo=memo
    )


async def _checked(session: aiohttp.ClientSession, name: str, url: str) -> Scrape:
    result = await scrape(session, url)
    if not result.ok:
        raise RuntimeError(f"{name}: scrape of {url} failed: {result.error}")
    return result


def _table(
    settings: EndToEndSettings,
    *,
    body_size: int,
    samples: int,
    first: dict[str, Scrape],
    timed: dict[str, list[Scrape]],
    memo: dict[str, float],
) -> Table:
    table = Table(
        f"2. End to end: {megabytes(body_size)} MB from an mTLS nginx upstream, client reads the whole body",
        [
            "path",
            "1st scrape",
            "median",
            "min",
            f"x {REFERENCE.split(' (', maxsplit=1)[0]}",
            "median TTFB",
            "TTFB vs reference",
            "MB/s (upstream body)",
            "MB out",
            "identical bodies",
            "memo entries",
        ],
    )
    reference = statistics.median(run.total_seconds for run in timed[REFERENCE])
    reference_ttfb = statistics.median(run.first_byte_seconds for run in timed[REFERENCE])
    for name, runs in timed.items():
        median = statistics.median(run.total_seconds for run in runs)
        ttfb = statistics.median(run.first_byte_seconds for run in runs)
        crcs = {(run.size, run.crc32) for run in [first[name], *runs]}
        table.add(
            name,
            seconds(first[name].total_seconds),
            seconds(median),
            seconds(min(run.total_seconds for run in runs)),
            ratio(median, reference),
            seconds(ttfb),
            f"{(ttfb - reference_ttfb) * 1000:+.1f} ms",
            f"{body_size / median / 1e6:.0f}",
            megabytes(runs[0].size),
            "yes" if len(crcs) == 1 else f"NO ({len(crcs)} different)",
            f"{memo[name]:,.0f}" if name in memo else "-",
        )
    table.notes += [
        f"upstream body: {body_size:,} bytes, {samples:,} samples (the apiserver capture, every series "
        "repeated with a `replica` label); served by nginx as a static file over TLS, ssl_verify_client on",
        f"{settings.rounds} timed rounds, each scraping every path once in turn, after one untimed round "
        "(1st scrape: the relays' memo is empty then, a cold pass)",
        f"relay: `python -m relay` child process, relabel_cache_size {RELAY_CACHE_SIZE:,}, "
        f"timeout {RELAY_TIMEOUT}; "
        "nginx: one worker per instance, upstream and proxy in separate instances, proxy keeps upstream "
        "connections alive",
        "TTFB: request sent → first body byte at the client (aiohttp, in the benchmark process)",
        "memo entries: metrics_relay_relabel_cache_entries after the last round; fewer than the body's "
        "series means the relay's memo cannot hold the body, and every scrape is a cold pass",
    ]
    return table
