"""Benchmark 4: 20 scrapes of one upstream at once: upstream requests, relabel passes, time, whole bodies."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.client import Scrape, scrape
from bench.payloads import apiserver_body, sample_count
from bench.pki import write_pki
from bench.relayproc import RelayProcess, running_relay
from bench.rulesets import KUBE_PROMETHEUS, compiled_rules, upstream_yaml
from bench.tables import Table, ratio, seconds
from bench.upstreams import CountingUpstream, serving_body
from relay.pipeline import body_relabeler

SAMPLES_RECEIVED = "metrics_relay_samples_received_total"


@dataclass(frozen=True)
class ConcurrencySettings:
    """How many scrapes run at once, and how many single scrapes give the baseline."""

    concurrent: int
    single_runs: int


@dataclass(frozen=True)
class Round:
    """Scrapes started together: what the upstream and the relay did, how long it took, what came back."""

    scrapes: list[Scrape]
    upstream_requests: int
    relabel_passes: float
    wall_seconds: float
    whole_and_identical: int


@dataclass(frozen=True)
class Setup:
    """What a round needs: the session, the relay, its upstream, the body the relay must send."""

    session: aiohttp.ClientSession
    relay: RelayProcess
    upstream: CountingUpstream
    expected: bytes
    samples_per_body: int


def expected_body(body: bytes) -> bytes:
    """What the relay must send for `body` with the kube-prometheus rules, computed in process."""
    relabeler = body_relabeler(compiled_rules(KUBE_PROMETHEUS, 100_000))
    return relabeler.feed(body) + relabeler.finish()


async def run_concurrency(settings: ConcurrencySettings, workdir: Path) -> Table:
    """A warm relay; single scrapes one after the other, then `concurrent` at once; one table."""
    fixture = apiserver_body()
    pki = write_pki(workdir / "pki")
    async with (
        serving_body(pki.server_context(), fixture) as upstream,
        running_relay(
            upstream_yaml(upstream.url, KUBE_PROMETHEUS, pki.relay_tls_yaml()), workdir / "relay"
        ) as relay,
        aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=120), connector=aiohttp.TCPConnector(limit=0)
        ) as session,
    ):
        setup = Setup(session, relay, upstream, expected_body(fixture), sample_count(fixture))
        await scrape_round(setup, 1)  # fills the memo
        await open_connections(session, relay, settings.concurrent)
        singles = [await scrape_round(setup, 1) for _ in range(settings.single_runs)]
        together = await scrape_round(setup, settings.concurrent)
    single_seconds = statistics.median(one.wall_seconds for one in singles)
    typical_single = min(singles, key=lambda one: abs(one.wall_seconds - single_seconds))
    table = Table(
        f"4. Concurrency: {settings.concurrent} simultaneous scrapes of one upstream (apiserver capture, "
        f"{KUBE_PROMETHEUS.name} rules)",
        [
            "scrapes",
            "upstream requests",
            "relabel passes",
            "wall time",
            "x single scrape",
            "fastest / slowest scrape",
            "complete and identical",
        ],
    )
    for label, one in (
        (f"1 (median of {settings.single_runs})", typical_single),
        (f"{settings.concurrent} at once", together),
    ):
        durations = [result.total_seconds for result in one.scrapes]
        table.add(
            label,
            one.upstream_requests,
            f"{one.relabel_passes:.2f}",
            seconds(one.wall_seconds),
            ratio(one.wall_seconds, single_seconds),
            f"{seconds(min(durations))} / {seconds(max(durations))}",
            f"{one.whole_and_identical}/{len(one.scrapes)}",
        )
    table.notes += [
        f"upstream: aiohttp over mTLS in the benchmark process, the {len(fixture):,}-byte capture with a "
        "Content-Length, counting its requests; relay: `python -m relay` child process, memo warm; the "
        f"client holds {settings.concurrent} kept-alive connections to the relay before the round",
        f"relabel passes: growth of {SAMPLES_RECEIVED} on /relay/metrics ÷ {setup.samples_per_body:,} "
        "samples per body; complete and identical: byte for byte the body BodyRelabeler makes in process",
    ]
    return table


async def open_connections(session: aiohttp.ClientSession, relay: RelayProcess, count: int) -> None:
    """Leave `count` kept-alive connections to the relay in the pool (as scrapers that keep theirs do), so
    that the scrapes of a round reach the relay together instead of one TCP handshake after another."""

    async def healthy() -> None:
        async with session.get(f"{relay.base_url}/-/healthy") as response:
            await response.read()

    await asyncio.gather(*(healthy() for _ in range(count)))


async def scrape_round(setup: Setup, count: int) -> Round:
    """Start `count` scrapes at once and wait for all; count upstream requests and relabel passes."""
    requests_before = setup.upstream.requests
    samples_before = await setup.relay.self_metric(setup.session, SAMPLES_RECEIVED)
    bodies: list[list[bytes]] = [[] for _ in range(count)]
    started = time.perf_counter()
    scrapes = await asyncio.gather(
        *(scrape(setup.session, setup.relay.metrics_url, keep=body) for body in bodies)
    )
    wall = time.perf_counter() - started
    samples = (
        await setup.relay.settled_metric(setup.session, SAMPLES_RECEIVED, samples_before) - samples_before
    )
    good = sum(
        1
        for result, body in zip(scrapes, bodies, strict=True)
        if result.ok and b"".join(body) == setup.expected
    )
    return Round(
        list(scrapes), setup.upstream.requests - requests_before, samples / setup.samples_per_body, wall, good
    )
