"""`metrics-relay relabel-test`: an upstream's rules applied offline to an exposition file or stdin."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay.errors import ConfigError, InvalidExpositionError, ScrapeError
from relay.loading import load_config
from relay.relabel_report import BodySummarizer, Summary, render_summary, summary_json
from relay.relabel_trace import parse_series_argument, render_trace, trace_json, trace_series
from relay.rules import Rules

CHUNK_BYTES = 1 << 16
"""How much of the input is read at a time: a body of any size is read in bounded memory."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The subcommand's flags (INTERFACE.md), in the dotted style of the relay's own."""
    parser = argparse.ArgumentParser(
        prog="metrics-relay relabel-test",
        description="Apply an upstream's metric_relabel_configs offline to an exposition body and print what "
        "each rule does (or, with --series, trace one series through every rule).",
    )
    parser.add_argument("--config.file", dest="config_file", type=Path, metavar="PATH", required=True)
    parser.add_argument("--upstream", metavar="NAME", required=True, help="the upstream whose rules apply")
    parser.add_argument(
        "--input",
        default="-",
        metavar="FILE",
        help="the exposition body, text format or OpenMetrics; '-' (the default) reads stdin",
    )
    parser.add_argument(
        "--input.format",
        dest="input_format",
        choices=("text", "openmetrics"),
        default="text",
        help="how the body is written (default text, the format 0.0.4)",
    )
    parser.add_argument(
        "--series",
        metavar="SERIES",
        help='trace this series instead: name{a="b"}, {__name__="name",a="b"} or a line of /metrics',
    )
    parser.add_argument("--format", dest="output_format", choices=("text", "json"), default="text")
    return parser.parse_args(argv)


class CommandError(Exception):
    """A problem that ends the command: its message is printed as it is, and the exit code is 1."""


def main(argv: Sequence[str]) -> int:
    """Run the subcommand with these arguments (those after `relabel-test`); the exit code."""
    args = parse_args(argv)
    try:
        output = run(args)
    except CommandError as exc:
        print(f"metrics-relay relabel-test: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(output)
    return 0


def run(args: argparse.Namespace) -> str:
    """What the command prints for these arguments; CommandError for a problem with them or the input."""
    rules = _upstream_rules(args.config_file, args.upstream)
    as_json = args.output_format == "json"
    if args.series is not None:
        try:
            series, labels = parse_series_argument(args.series)
        except ValueError as exc:
            raise CommandError(f"--series: {exc}") from None
        trace = trace_series(rules, series, labels)
        return _json(trace_json(trace)) if as_json else render_trace(trace)
    summary = _summary(rules, args.input, openmetrics=args.input_format == "openmetrics")
    return _json(summary_json(summary)) if as_json else render_summary(summary)


def _upstream_rules(config_file: Path, name: str) -> Rules:
    """The named upstream's compiled rules; CommandError for an unusable file or an unknown name."""
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    upstream = next((each for each in config.upstreams if each.name == name), None)
    if upstream is None:
        names = ", ".join(each.name for each in config.upstreams)
        raise CommandError(f"{config.source}: no upstream is called {name!r}; the file has: {names}")
    try:
        return Rules.for_upstream(upstream)
    except ConfigError as exc:
        raise CommandError(str(ConfigError(config.source, exc.problems))) from None


def _summary(rules: Rules, source: str, *, openmetrics: bool) -> Summary:
    """The summary of the body in file `source` ('-': stdin), read in chunks."""
    shown = "<stdin>" if source == "-" else source
    summarizer = BodySummarizer(rules, openmetrics=openmetrics)
    try:
        with contextlib.nullcontext(sys.stdin.buffer) if source == "-" else Path(source).open("rb") as body:
            while chunk := body.read(CHUNK_BYTES):
                summarizer.feed(chunk)
        return summarizer.finish()
    except OSError as exc:
        raise CommandError(f"{shown}: cannot read the input: {exc.strerror or exc}") from None
    except ScrapeError as exc:
        hint = ""
        if isinstance(exc, InvalidExpositionError) and not openmetrics:
            hint = " (if the body is OpenMetrics, add --input.format=openmetrics)"
        raise CommandError(f"{shown}: {exc.detail}{hint}") from None


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
