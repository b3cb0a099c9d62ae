"""Benchmark 1: parse → relabel → serialize on one core, in process, on both line engines, beside
prometheus_client's parser."""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Sized
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from bench.payloads import apiserver_body, replicated_body, sample_count, value_variants
from bench.rulesets import ALL_RULE_SETS, KUBE_PROMETHEUS, RuleSet, compiled_rules
from bench.tables import Table, megabytes, rate, ratio, seconds
from relay.config import DEFAULT_RELABEL_CACHE_SIZE
from relay.pipeline import available_engines, body_relabeler, default_engine
from relay.rules import Rules

CHUNK_BYTES = 64 * 1024  # about what aiohttp's iter_any() hands the relay from a TLS stream
WARM_MEMO = 10_000_000  # relabel_cache_size large enough that a second scrape finds every series
VARIANTS = 4  # value variants of each payload: 0 is the payload itself, later scrapes cycle through 1..3


@dataclass(frozen=True)
class CoreSettings:
    """Sizes and repetitions of the core benchmark."""

    built_payload_bytes: int
    cold_runs: int
    warm_runs: int
    parser_input_bytes: int  # prometheus_client gets at most this much of a payload


@dataclass(frozen=True)
class Pass:
    """One body through a BodyRelabeler: its time and counts."""

    seconds: float
    samples_in: int
    samples_out: int
    bytes_out: int
    memo_entries: int  # series in the memo after the pass (a memo that cannot hold the body stays cold)
    memo_bytes_per_entry: float | None  # the native memo's table_bytes / entries after the pass


@dataclass(frozen=True)
class Payload:
    """A body as chunks, in every value variant."""

    name: str
    variants: list[list[bytes]]  # variants[k]: the chunks of value variant k
    size: int
    samples: int
    is_fixture: bool


def chunked(body: bytes) -> list[bytes]:
    """The body in CHUNK_BYTES pieces."""
    return [body[i : i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)]


def relabel_pass(chunks: list[bytes], rules: Rules, engine: str) -> Pass:
    """Feed the chunks to a new BodyRelabeler, as one scrape does; the output is counted, not kept."""
    gc.collect()
    relabeler = body_relabeler(rules, engine=engine)
    started = time.perf_counter()
    size = 0
    for chunk in chunks:
        size += len(relabeler.feed(chunk))
    size += len(relabeler.finish())
    elapsed = time.perf_counter() - started
    return Pass(
        elapsed,
        relabeler.samples_in,
        relabeler.samples_out,
        size,
        rules.memo_entries,
        _native_bytes_per_entry(rules),
    )


def _native_bytes_per_entry(rules: Rules) -> float | None:
    memo = rules.native_memo
    if memo is None or not isinstance(memo, Sized) or not len(memo):
        return None
    return float(getattr(memo, "table_bytes", 0)) / len(memo)


def python_memo_bytes_per_entry(chunks: list[bytes], rule_set: RuleSet) -> float:
    """Python-engine memo: what a cold pass leaves allocated (tracemalloc) over the series it remembered.

    Rules are compiled before tracing starts, so the figure holds the memo's dicts, keys and results (and the
    tail memo beside it), not the compiled program."""
    rules = compiled_rules(rule_set, WARM_MEMO)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        relabel_pass(chunks, rules, "python")
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held / max(1, rules.memo_entries)


def parser_rate(body: bytes, limit: int) -> tuple[int, float]:
    """prometheus_client's parse of at most `limit` bytes of `body` (cut before a HELP): bytes, seconds."""
    text = body
    if len(body) > limit:
        cut = body.rfind(b"\n# HELP ", 0, limit)
        text = body[: cut + 1]
    decoded = text.decode()
    gc.collect()
    started = time.perf_counter()
    samples = sum(len(family.samples) for family in text_string_to_metric_families(decoded))
    elapsed = time.perf_counter() - started
    if samples == 0:
        raise RuntimeError("prometheus_client parsed no sample")
    return len(text), elapsed


def _payload(name: str, body: bytes, *, is_fixture: bool) -> Payload:
    variants = [chunked(variant) for variant in value_variants(body, VARIANTS)]
    return Payload(name, variants, len(body), sample_count(body), is_fixture)


def run_core(settings: CoreSettings) -> Table:
    """Every payload x rule set x engine: cold, warm, warm with changing values; the default configuration;
    one table."""
    fixture = apiserver_body()
    built = replicated_body(fixture, settings.built_payload_bytes)
    payloads = [
        _payload("apiserver fixture", fixture, is_fixture=True),
        _payload(f"built {megabytes(len(built))} MB", built, is_fixture=False),
    ]
    table = Table(
        "1. Core throughput: BodyRelabeler, one core, in process (no sockets)",
        [
            "payload",
            "rules",
            "engine",
            "scrape",
            "time",
            "samples/s",
            "MB/s",
            "samples in→out",
            "MB out",
            "memo after",
            "memo B/entry",
            "x prometheus_client",
        ],
    )
    parser_notes = []
    for payload, body in zip(payloads, (fixture, built), strict=True):
        parsed_bytes, parsed_seconds = parser_rate(body, settings.parser_input_bytes)
        parser_mb_per_second = parsed_bytes / parsed_seconds / 1e6
        parser_notes.append(
            f"prometheus_client {_version()} `text_string_to_metric_families` (parse only) on "
            f"{payload.name}: {parser_mb_per_second:.1f} MB/s over the first {megabytes(parsed_bytes)} MB"
        )
        table.add(
            payload.name,
            "-",
            "prometheus_client parser",
            "parse only",
            seconds(parsed_seconds),
            rate(sample_count(body[:parsed_bytes]), parsed_seconds),
            f"{parser_mb_per_second:.1f}",
            "-",
            "-",
            "-",
            "-",
            "1.00x",
        )
        rows: list[tuple[str, str, str, Pass, str]] = []
        for rule_set in ALL_RULE_SETS:
            for engine in available_engines():
                python_per_entry = "-"
                if engine == "python" and payload.is_fixture:
                    per_entry = python_memo_bytes_per_entry(payload.variants[0], rule_set)
                    python_per_entry = f"{per_entry:.0f} (tracemalloc)"
                for label, result in _scrapes(payload, rule_set, engine, settings):
                    rows.append((rule_set.name, engine, label, result, python_per_entry))
        rows += [
            (KUBE_PROMETHEUS.name, default_engine, label, result, "-")
            for label, result in _default_configuration(payload, settings.warm_runs)
        ]
        for rule_name, engine, label, result, python_per_entry in rows:
            mb_per_second = payload.size / result.seconds / 1e6
            per_entry = result.memo_bytes_per_entry
            table.add(
                payload.name,
                rule_name,
                engine,
                label,
                seconds(result.seconds),
                rate(result.samples_in, result.seconds),
                f"{mb_per_second:.1f}",
                f"{result.samples_in}→{result.samples_out}",
                megabytes(result.bytes_out),
                f"{result.memo_entries:,}",
                f"{per_entry:.0f}" if per_entry is not None else python_per_entry,
                ratio(mb_per_second, parser_mb_per_second),
            )
    table.notes += [
        f"cold: first scrape with freshly compiled Rules (median of {settings.cold_runs} on the fixture, one "
        f"run on the built payload); warm: a later scrape of the same body with the same Rules "
        f"(median of {settings.warm_runs}); warm, values changed: a later scrape whose every sample value "
        f"differs from the scrape before (value variants 1..{VARIANTS - 1} of the body in turn, same series, "
        f"same order, as a live apiserver's values change; median of {settings.warm_runs}). These rows run "
        f"with relabel_cache_size {WARM_MEMO:,}",
        f"default config: kube-prometheus rules, the default engine ({default_engine}) and the default "
        f"relabel_cache_size ({DEFAULT_RELABEL_CACHE_SIZE:,}, relay.config): a relay's 1st scrape, "
        "then later scrapes with changed values",
        f"fed in {CHUNK_BYTES // 1024} KiB chunks; MB = 10^6 bytes of input; samples/s counts input samples",
        "memo after: Rules.memo_entries after the pass (either engine's memo); a memo that cannot hold "
        "every series of a body keeps it cold",
        "memo B/entry: native rows: the native memo's table_bytes (entries, identities, index, replacement "
        "arena, as allocated, growth slack included) over its entries after the pass; python rows: "
        "tracemalloc over one extra cold pass of the apiserver fixture per rule set (Rules compiled before "
        "tracing; what the pass leaves allocated: series dict, keys, results and the tail memo, over the "
        "series remembered), shown on that rule set's three fixture rows and `-` on the built payload",
        "x prometheus_client: this row's MB/s over the parser's MB/s on the same payload",
        *parser_notes,
    ]
    return table


def _scrapes(
    payload: Payload, rule_set: RuleSet, engine: str, settings: CoreSettings
) -> list[tuple[str, Pass]]:
    """Cold, warm (same body) and warm with changing values, on one engine."""
    cold_runs = settings.cold_runs if payload.is_fixture else 1
    warm_runs = settings.warm_runs
    base = payload.variants[0]
    cold = []
    for _ in range(cold_runs):
        rules = compiled_rules(rule_set, WARM_MEMO)
        cold.append(relabel_pass(base, rules, engine))
    warm = [relabel_pass(base, rules, engine) for _ in range(warm_runs)]  # the last cold run's memo
    changing = [relabel_pass(_changed(payload, run), rules, engine) for run in range(warm_runs)]
    return [
        ("cold (1st)", _median(cold)),
        ("warm", _median(warm)),
        ("warm, values changed", _median(changing)),
    ]


def _default_configuration(payload: Payload, warm_runs: int) -> list[tuple[str, Pass]]:
    """kube-prometheus rules as a user gets them: default engine, default relabel_cache_size."""
    rules = compiled_rules(KUBE_PROMETHEUS)
    first = relabel_pass(payload.variants[0], rules, default_engine)
    later = [relabel_pass(_changed(payload, run), rules, default_engine) for run in range(warm_runs)]
    return [("default config: 1st scrape", first), ("default config: later, values changed", _median(later))]


def _changed(payload: Payload, run: int) -> list[bytes]:
    """The chunks of the run-th later scrape: variants 1, 2, 3, 1, …, each unlike the scrape before."""
    return payload.variants[1 + run % (VARIANTS - 1)]


def _median(passes: list[Pass]) -> Pass:
    middle = statistics.median_low([one.seconds for one in passes])
    return next(one for one in passes if one.seconds == middle)


def _version() -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version("prometheus-client")
