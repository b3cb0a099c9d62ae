"""Benchmark 1: parse → relabel → serialize on one core, in process, beside prometheus_client's parser."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from bench.payloads import apiserver_body, replicated_body, sample_count
from bench.rulesets import ALL_RULE_SETS, KUBE_PROMETHEUS, RuleSet, compiled_rules
from bench.tables import Table, megabytes, rate, ratio, seconds
from relay.pipeline import body_relabeler
from relay.rules import Rules

CHUNK_BYTES = 64 * 1024  # about what aiohttp's iter_any() hands the relay from a TLS stream
WARM_MEMO = 10_000_000  # relabel_cache_size large enough that a second scrape finds every series
DEFAULT_MEMO = 100_000  # relabel_cache_size's default


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


def relabel_pass(chunks: list[bytes], rules: Rules) -> Pass:
    """Feed the chunks to a new BodyRelabeler, as one scrape does; the output is counted, not kept."""
    gc.collect()
    relabeler = body_relabeler(rules)
    started = time.perf_counter()
    size = 0
    for chunk in chunks:
        size += len(relabeler.feed(chunk))
    size += len(relabeler.finish())
    elapsed = time.perf_counter() - started
    return Pass(elapsed, relabeler.samples_in, relabeler.samples_out, size, len(rules.series))


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


def run_core(settings: CoreSettings) -> Table:
    """Every payload x rule set, cold and warm; one table."""
    fixture = apiserver_body()
    built = replicated_body(fixture, settings.built_payload_bytes)
    payloads = [
        ("apiserver fixture", fixture),
        (f"built {megabytes(len(built))} MB", built),
    ]
    table = Table(
        "1. Core throughput: BodyRelabeler, one core, in process (no sockets)",
        [
            "payload",
            "rules",
            "scrape",
            "time",
            "samples/s",
            "MB/s",
            "samples in→out",
            "MB out",
            "memo after",
            "x prometheus_client",
        ],
    )
    parser_notes = []
    for payload_name, body in payloads:
        chunks = [body[i : i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)]
        parsed_bytes, parsed_seconds = parser_rate(body, settings.parser_input_bytes)
        parser_mb_per_second = parsed_bytes / parsed_seconds / 1e6
        parser_notes.append(
            f"prometheus_client {_version()} `text_string_to_metric_families` (parse only) on "
            f"{payload_name}: {parser_mb_per_second:.1f} MB/s over the first {megabytes(parsed_bytes)} MB"
        )
        table.add(
            payload_name,
            "prometheus_client parser",
            "parse only",
            seconds(parsed_seconds),
            rate(sample_count(body[:parsed_bytes]), parsed_seconds),
            f"{parser_mb_per_second:.1f}",
            "-",
            "-",
            "-",
            "1.00x",
        )
        rows: list[tuple[str, str, Pass]] = []
        for rule_set in ALL_RULE_SETS:
            cold_runs = settings.cold_runs if body is fixture else 1
            for label, result in _cold_and_warm(chunks, rule_set, cold_runs, settings.warm_runs):
                rows.append((rule_set.name, label, result))
        if sample_count(body) > DEFAULT_MEMO:
            rules = compiled_rules(KUBE_PROMETHEUS, DEFAULT_MEMO)
            relabel_pass(chunks, rules)
            label = f"2nd, memo {DEFAULT_MEMO // 1000}k (default)"
            rows.append((KUBE_PROMETHEUS.name, label, relabel_pass(chunks, rules)))
        for rule_name, label, result in rows:
            mb_per_second = len(body) / result.seconds / 1e6
            table.add(
                payload_name,
                rule_name,
                label,
                seconds(result.seconds),
                rate(result.samples_in, result.seconds),
                f"{mb_per_second:.1f}",
                f"{result.samples_in}→{result.samples_out}",
                megabytes(result.bytes_out),
                f"{result.memo_entries:,}",
                ratio(mb_per_second, parser_mb_per_second),
            )
    table.notes += [
        f"cold: first scrape with freshly compiled Rules (median of {settings.cold_runs} on the fixture, one "
        f"run on the built payload); warm: a later "
        f"scrape with the same Rules, relabel_cache_size {WARM_MEMO:,} (median of {settings.warm_runs})",
        f"fed in {CHUNK_BYTES // 1024} KiB chunks; MB = 10^6 bytes of input; samples/s counts input samples",
        "memo after: series in Rules.series after the pass; the relay may bound it below relabel_cache_size "
        "(by bytes, for instance), and a memo that cannot hold every series of a body keeps it cold",
        "x prometheus_client: this row's MB/s over the parser's MB/s on the same payload",
        *parser_notes,
    ]
    return table


def _cold_and_warm(
    chunks: list[bytes], rule_set: RuleSet, cold_runs: int, warm_runs: int
) -> list[tuple[str, Pass]]:
    cold = []
    for _ in range(cold_runs):
        rules = compiled_rules(rule_set, WARM_MEMO)
        cold.append(relabel_pass(chunks, rules))
    warm = [relabel_pass(chunks, rules) for _ in range(warm_runs)]  # the last cold run's memo
    return [("cold (1st)", _median(cold)), ("warm", _median(warm))]


def _median(passes: list[Pass]) -> Pass:
    middle = statistics.median_low([one.seconds for one in passes])
    return next(one for one in passes if one.seconds == middle)


def _version() -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version("prometheus-client")
