"""Benchmark 2: a big body from an mTLS nginx through the relay, beside nginx and aiohttp passthrough proxies.

Every path serves the same nginx upstream (TLS 1.3, client certificate required); the client reads each body
to its end. Runs alternate between the paths so that drifts of the machine hit them alike. Two modes, each
with its own upstream and proxies: the same body on every request, and values changing between requests
(value variants of the body, as a live apiserver's values change).
"""

from __future__ import annotations

import itertools
import statistics
import sys
import zlib
from collections import defaultdict
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.client import Scrape, scrape
from bench.nginx import NginxServer, mtls_file_server, mtls_variant_server, passthrough_proxy, running_nginx
from bench.payloads import apiserver_body, replicated_body, sample_count, value_variants
from bench.pki import PkiFiles, write_pki
from bench.processes import free_port, running_process, write_file
from bench.relayproc import PYTHON_ENGINE, running_relay
from bench.rulesets import KUBE_PROMETHEUS, NONE, RuleSet, compiled_rules, upstream_yaml
from bench.tables import Table, megabytes, ratio, seconds
from relay.config import DEFAULT_RELABEL_CACHE_SIZE
from relay.pipeline import body_relabeler

RELAY_CACHE_SIZE = DEFAULT_RELABEL_CACHE_SIZE  # not set in the configuration: the default (peers names it)
RELAY_TIMEOUT = "120s"  # the default (10 s) is short for the Python engine's 1st scrape of a 50 MB body
REFERENCE = "nginx proxy (proxy_buffering on)"
VARIANTS = 4
SAME, CHANGING = "same body", "changing values"


@dataclass(frozen=True)
class EndToEndSettings:
    """Size of the upstream body and how many alternating rounds are timed."""

    payload_bytes: int
    rounds: int


@dataclass(frozen=True)
class RelayPath:
    """A relay row: its rules and the environment of its process (set only to choose the python engine)."""

    name: str
    rule_set: RuleSet
    env: dict[str, str] = field(default_factory=dict)


RELAYS = (
    RelayPath(f"relay, {KUBE_PROMETHEUS.name}", KUBE_PROMETHEUS),
    RelayPath(f"relay, {NONE.name}", NONE),
    RelayPath(f"relay (python engine), {KUBE_PROMETHEUS.name}", KUBE_PROMETHEUS, PYTHON_ENGINE),
)


@dataclass
class ModeResult:
    """The scrapes of one mode: the untimed first round, the timed rounds, the relays' memo entries."""

    first: dict[str, Scrape]
    timed: dict[str, list[Scrape]]
    memo: dict[str, float]


def relay_config(upstream_url: str, pki: PkiFiles, rule_set: RuleSet) -> str:
    """A relay configuration for the nginx upstream with `rule_set`, else the defaults (timeout aside)."""
    return upstream_yaml(upstream_url, rule_set, pki.relay_tls_yaml() + f"    timeout: {RELAY_TIMEOUT}\n")


def expected_crcs(variants: list[bytes]) -> dict[str, list[int]]:
    """Per path kind, the CRC-32 of each variant's body as it must arrive: as it is (proxies) or as
    body_relabeler makes it in process (relays; native engine, which the Python one equals byte for byte)."""
    expected = {"": [zlib.crc32(variant) for variant in variants]}
    for rule_set in (KUBE_PROMETHEUS, NONE):
        rules = compiled_rules(rule_set)
        crcs = []
        for variant in variants:
            relabeler = body_relabeler(rules)
            crcs.append(zlib.crc32(relabeler.feed(variant) + relabeler.finish()))
        expected[rule_set.name] = crcs
    return expected


async def run_end_to_end(settings: EndToEndSettings, workdir: Path) -> Table:
    """Both modes in turn, each with its upstream, proxies and relays; one table."""
    body = replicated_body(apiserver_body(), settings.payload_bytes)
    variants = value_variants(body, VARIANTS)
    files = [write_file(workdir / f"payload-{k}.prom", variant) for k, variant in enumerate(variants)]
    expected = expected_crcs(variants)
    del variants
    pki = write_pki(workdir / "pki")
    results = {
        SAME: await _run_mode(settings, mtls_file_server(pki, files[0]), pki, workdir / "same"),
        CHANGING: await _run_mode(settings, mtls_variant_server(pki, files), pki, workdir / "changing"),
    }
    return _table(
        settings, body_size=len(body), samples=sample_count(body), results=results, expected=expected
    )


async def _run_mode(
    settings: EndToEndSettings, upstream: NginxServer, pki: PkiFiles, workdir: Path
) -> ModeResult:
    """Start the upstream, the proxies and the relays; scrape each path in turn."""
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
        for index, path in enumerate(RELAYS):
            config = relay_config(upstream_url, pki, path.rule_set)
            relays[path.name] = await stack.enter_async_context(
                running_relay(config, workdir / f"relay-{index}", path.env)
            )
        paths = {
            REFERENCE: f"http://127.0.0.1:{buffered.port}/metrics",
            "nginx proxy (proxy_buffering off)": f"http://127.0.0.1:{unbuffered.port}/metrics",
            "aiohttp passthrough (no parsing)": f"http://127.0.0.1:{aiohttp_port}/metrics",
            **{name: relay.metrics_url for name, relay in relays.items()},
        }
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300), auto_decompress=False)
        )
        for path in RELAYS:
            engine = await relays[path.name].engine(session)
            if engine != ("python" if path.env else "native"):
                raise RuntimeError(f"{path.name}: the relay runs the {engine} engine")
        first = {name: await _checked(session, name, url) for name, url in paths.items()}
        timed: dict[str, list[Scrape]] = defaultdict(list)
        for _ in range(settings.rounds):
            for name, url in paths.items():
                timed[name].append(await _checked(session, name, url))
        memo = {
            name: await relay.self_metric(session, "metrics_relay_relabel_cache_entries")
            for name, relay in relays.items()
        }
    return ModeResult(first, timed, memo)


async def _checked(session: aiohttp.ClientSession, name: str, url: str) -> Scrape:
    result = await scrape(session, url)
    if not result.ok:
        raise RuntimeError(f"{name}: scrape of {url} failed: {result.error}")
    return result


def _check(mode: str, runs: list[Scrape], crcs: list[int]) -> str:
    """Whether each body is what it must be: the variant's, as the path must make it."""
    seen = [crcs.index(run.crc32) if run.crc32 in crcs else None for run in runs]
    wrong = sum(variant is None for variant in seen)
    if mode == SAME:
        different = len({(run.size, run.crc32) for run in runs})
        if different == 1 and not wrong:
            return "yes, identical"
        return f"NO ({different} different, {wrong} not as expected)"
    repeats = sum(1 for before, now in itertools.pairwise(seen) if now is not None and before == now)
    if wrong:
        return f"NO ({wrong} of {len(runs)} match no variant)"
    variants = "".join(str(variant) for variant in seen)
    return f"yes, variants {variants}" + (f" ({repeats} repeats)" if repeats else "")


def _table(
    settings: EndToEndSettings,
    *,
    body_size: int,
    samples: int,
    results: dict[str, ModeResult],
    expected: dict[str, list[int]],
) -> Table:
    table = Table(
        f"2. End to end: {megabytes(body_size)} MB from an mTLS nginx upstream, client reads the whole body",
        [
            "upstream",
            "path",
            "1st scrape",
            "median",
            "min",
            f"x {REFERENCE.split(' (', maxsplit=1)[0]}",
            "median TTFB",
            "TTFB vs reference",
            "MB/s (upstream body)",
            "MB out",
            "bodies as expected",
            "memo entries",
        ],
    )
    rule_sets = {path.name: path.rule_set.name for path in RELAYS}
    for mode, result in results.items():
        timed = result.timed
        reference = statistics.median(run.total_seconds for run in timed[REFERENCE])
        reference_ttfb = statistics.median(run.first_byte_seconds for run in timed[REFERENCE])
        for name, runs in timed.items():
            median = statistics.median(run.total_seconds for run in runs)
            ttfb = statistics.median(run.first_byte_seconds for run in runs)
            table.add(
                mode,
                name,
                seconds(result.first[name].total_seconds),
                seconds(median),
                seconds(min(run.total_seconds for run in runs)),
                ratio(median, reference),
                seconds(ttfb),
                f"{(ttfb - reference_ttfb) * 1000:+.1f} ms",
                f"{body_size / median / 1e6:.0f}",
                megabytes(runs[0].size),
                _check(mode, [result.first[name], *runs], expected[rule_sets.get(name, "")]),
                f"{result.memo[name]:,.0f}" if name in result.memo else "-",
            )
    table.notes += [
        f"upstream body: {body_size:,} bytes, {samples:,} samples (the apiserver capture, every series "
        "repeated with a `replica` label); served by nginx as a static file over TLS, ssl_verify_client on",
        f"same body: every request gets that file; changing values: {VARIANTS} value variants of it (same "
        "series and order, every sample value different) and nginx serves variant (n mod "
        f"{VARIANTS}) on the n-th request of a connection (`map $connection_requests`), so every path, nginx "
        "and relays alike, gets values unlike its scrape before. Each mode has its own upstream, proxies and "
        "relays, started fresh; the ratios and TTFB differences are against nginx in the same mode's rounds",
        f"{settings.rounds} timed rounds per mode, each scraping every path once in turn, after one untimed "
        "round (1st scrape: the relays' memo is empty then, a cold pass)",
        "relay: `python -m relay` child process on the default configuration (native engine, "
        f"relabel_cache_size {DEFAULT_RELABEL_CACHE_SIZE:,}) but for timeout {RELAY_TIMEOUT}; the python "
        "engine row is the same with RELAY_NO_EXTENSIONS=1 in its environment; nginx: one worker per "
        "instance, upstream and proxy in separate instances, proxy keeps upstream connections alive",
        "TTFB: request sent → first body byte at the client (aiohttp, in the benchmark process)",
        "bodies as expected: every body of the row (1st scrape included) has the CRC-32 of a variant as the "
        "path must give it: as served for the proxies, as body_relabeler makes it in process (native engine, "
        "default relabel_cache_size) for the relays; same body: all identical too; changing values: which "
        "variant each scrape got, in order, and how often one repeated the scrape before (never, if "
        "connections stay alive)",
        "memo entries: metrics_relay_relabel_cache_entries after the last round; fewer than the body's "
        "series means the relay's memo cannot hold the body, and every scrape is a cold pass",
    ]
    return table
