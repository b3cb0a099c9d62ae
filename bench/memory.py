"""Benchmark 3: the relay process's peak RSS while it streams a body far larger than its memory.

Every relay runs on the default configuration (relabel_cache_size and engine as a user gets them; the
timeout aside), one row on the Python engine for comparison. Two kinds of body, both generated on the fly
by an mTLS upstream in this process (chunked, no length):
- cycled: the same R replicas of the apiserver capture over and over (Rx23k series, which the default memo
  holds), so every line after the first cycle is a memo hit;
- unique: every series new (replicas 0-3 of every family, then 4-7, …), so the memo fills to its bound (the
  default) and every later line takes the cold path; 1 GiB for keep/drop rules (decided in C on the
  native engine), smaller for rules that rewrite series (their cold path is Python's).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.client import scrape
from bench.payloads import FamilyBlock, apiserver_body, family_blocks, replicated_chunks
from bench.pki import PkiFiles, write_pki
from bench.relayproc import PYTHON_ENGINE, RelayProcess, running_relay
from bench.rulesets import KUBE_PROMETHEUS, NONE, REWRITE, RuleSet, upstream_yaml
from bench.tables import Table, mebibytes, megabytes, seconds
from bench.upstreams import CountingUpstream, serving_stream
from relay.config import DEFAULT_RELABEL_CACHE_SIZE

RELAY_TIMEOUT = "900s"
RSS_SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class MemorySettings:
    """How large the cycled and the unique bodies are."""

    cycled_bytes: int
    unique_bytes: int


@dataclass(frozen=True)
class BodyKind:
    """A generated body: its size, and for a cycled one the replicas in a cycle (0: all series unique)."""

    target_bytes: int
    cycle_replicas: int = 0

    def name(self) -> str:
        """For the table."""
        return f"cycled x{self.cycle_replicas}" if self.cycle_replicas else "unique"


def limited(chunks: Iterator[bytes], target_bytes: int) -> Iterator[bytes]:
    """Chunks until at least `target_bytes` were given (chunks end at line ends)."""
    given = 0
    for chunk in chunks:
        yield chunk
        given += len(chunk)
        if given >= target_bytes:
            return


UNIQUE_GROUP = 4  # a unique body is replicas 0-3 of every family, then 4-7, …: all series new, all families


def body_chunks(blocks: list[FamilyBlock], kind: BodyKind) -> Iterator[bytes]:
    """The chunks of one generated body (from the capture's family blocks, cut once)."""
    stream: Iterator[bytes]
    if kind.cycle_replicas:
        cycle = list(replicated_chunks(blocks, kind.cycle_replicas))  # made once: the upstream keeps up
        stream = itertools.chain.from_iterable(itertools.repeat(cycle))
    else:
        groups = itertools.count(0, UNIQUE_GROUP)
        stream = itertools.chain.from_iterable(
            replicated_chunks(blocks, UNIQUE_GROUP, first_replica=first) for first in groups
        )
    return limited(stream, kind.target_bytes)


def relay_config(url: str, pki: PkiFiles, rule_set: RuleSet) -> str:
    """A relay configuration for the generating upstream: the defaults but for a long timeout."""
    return upstream_yaml(url, rule_set, pki.relay_tls_yaml() + f"    timeout: {RELAY_TIMEOUT}\n")


@dataclass(frozen=True)
class Case:
    """One row: a body, a rule set and the relay's line engine."""

    kind: BodyKind
    rule_set: RuleSet
    engine: str = "native"

    def env(self) -> dict[str, str]:
        """The relay process's added environment."""
        return PYTHON_ENGINE if self.engine == "python" else {}


@dataclass
class Measurement:
    """What one relay process did with one body: time, bytes, memory over time, self-metrics."""

    seconds: float = 0.0
    received: int = 0
    idle_rss: int = 0
    peak_rss: int = 0
    rss_by_progress: list[tuple[int, int]] = field(default_factory=list)  # (upstream bytes sent, VmRSS)
    memo_entries: float = 0.0
    samples_in: float = 0.0
    samples_out: float = 0.0

    def rss_at(self, fraction: float) -> int:
        """VmRSS at the first sample taken after `fraction` of the body was sent."""
        for sent, rss in self.rss_by_progress:
            if sent >= fraction * self.received:
                return rss
        return self.rss_by_progress[-1][1] if self.rss_by_progress else 0


async def run_memory(settings: MemorySettings, workdir: Path) -> Table:
    """One fresh relay process per (body, rules); its RSS while and after relaying the whole body."""
    fixture = apiserver_body()
    blocks = family_blocks(fixture)
    series_per_replica = sum(block.samples for block in blocks)
    one_replica = BodyKind(settings.cycled_bytes, cycle_replicas=1)
    four_replicas = BodyKind(settings.cycled_bytes, cycle_replicas=4)
    cases = [
        Case(one_replica, NONE),
        Case(four_replicas, NONE),
        Case(four_replicas, KUBE_PROMETHEUS),
        Case(four_replicas, KUBE_PROMETHEUS, "python"),
        Case(BodyKind(settings.cycled_bytes), KUBE_PROMETHEUS),
        Case(BodyKind(settings.unique_bytes), REWRITE),
    ]
    pki = write_pki(workdir / "pki")
    current: list[BodyKind] = []
    results = []
    async with (
        serving_stream(pki.server_context(), lambda: body_chunks(blocks, current[0])) as upstream,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session,
    ):
        for index, case in enumerate(cases):
            current[:] = [case.kind]
            config = relay_config(upstream.url, pki, case.rule_set)
            async with running_relay(config, workdir / f"relay-{index}", case.env()) as relay:
                results.append(await measure(session, relay, upstream))
    return _table(cases, results, series_per_replica)


async def measure(
    session: aiohttp.ClientSession, relay: RelayProcess, upstream: CountingUpstream
) -> Measurement:
    """Scrape the relay once while sampling its VmRSS every 100 ms; then read its self-metrics."""
    measurement = Measurement(idle_rss=relay.memory()["VmRSS"])
    sent_before = upstream.bytes_sent
    done = asyncio.Event()

    async def sample_rss() -> None:
        while not done.is_set():
            sent = upstream.bytes_sent - sent_before
            measurement.rss_by_progress.append((sent, relay.memory()["VmRSS"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), RSS_SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample_rss())
    try:
        result = await scrape(session, relay.metrics_url)
    finally:
        done.set()
        await sampler
    if not result.ok:
        raise RuntimeError(f"memory benchmark: the relayed body broke off: {result.error}")
    measurement.seconds = result.total_seconds
    measurement.received = upstream.bytes_sent - sent_before
    measurement.rss_by_progress.append((measurement.received, relay.memory()["VmRSS"]))
    measurement.peak_rss = relay.memory()["VmHWM"]
    measurement.samples_in = await relay.settled_metric(session, "metrics_relay_samples_received_total", 0)
    measurement.samples_out = await relay.self_metric(session, "metrics_relay_samples_relayed_total")
    measurement.memo_entries = await relay.self_metric(session, "metrics_relay_relabel_cache_entries")
    return measurement


def _table(cases: list[Case], results: list[Measurement], series_per_replica: int) -> Table:
    table = Table(
        "3. Memory: RSS of the relay process while streaming a generated body",
        [
            "body",
            "rules",
            "engine",
            "upstream MiB",
            "time",
            "MB/s",
            "RSS idle",
            "VmRSS at 25% / 50% / 100% of the body",
            "peak RSS (VmHWM)",
            "memo entries / bound",
            "samples in→out",
        ],
    )
    for case, one in zip(cases, results, strict=True):
        table.add(
            case.kind.name(),
            case.rule_set.name,
            case.engine,
            mebibytes(one.received),
            seconds(one.seconds),
            f"{one.received / one.seconds / 1e6:.0f}",
            f"{mebibytes(one.idle_rss)} MiB",
            " / ".join(mebibytes(one.rss_at(fraction)) for fraction in (0.25, 0.5, 1.0)) + " MiB",
            f"{mebibytes(one.peak_rss)} MiB",
            f"{one.memo_entries:,.0f} / {DEFAULT_RELABEL_CACHE_SIZE:,}",
            f"{one.samples_in:,.0f}→{one.samples_out:,.0f}",
        )
    table.notes += [
        "every relay on the default configuration: relabel_cache_size not set (the default, "
        f"{DEFAULT_RELABEL_CACHE_SIZE:,}), timeout {RELAY_TIMEOUT}; engine native, or python "
        "(RELAY_NO_EXTENSIONS=1 in the relay's environment)",
        f"cycled xR: R replicas of the apiserver capture (R x {series_per_replica:,} series) over and over: "
        "the memo holds one cycle, so every line after the first cycle is a memo hit (series repeat)",
        f"unique: every series appears once (replicas 0-{UNIQUE_GROUP - 1} of every family, then "
        f"{UNIQUE_GROUP}-{2 * UNIQUE_GROUP - 1}, …): the memo fills to its bound, keeps "
        "what it has, and every later line is parsed and relabeled (cold path)",
        "a fresh relay process per row; RSS idle: VmRSS after start-up; VmRSS sampled every "
        f"{RSS_SAMPLE_SECONDS * 1000:.0f} ms against the upstream bytes sent; peak: VmHWM after the scrape; "
        "memo entries: metrics_relay_relabel_cache_entries after the scrape; the client reads and discards "
        f"the relayed body; the upstream sends chunks of about {megabytes(256 * 1024)} MB",
    ]
    return table
