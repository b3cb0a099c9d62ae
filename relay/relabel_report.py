"""What an upstream's relabel rules do over a whole body: a per-rule summary (pure; relabel_trace.py traces
one series).

The summary reads a body chunk by chunk as the relay would (the same line framing, checks and
`on_invalid_line` handling) and counts, for each rule in order, the samples that reach it, those it drops
and those whose labels it changes, by family. Each series text is traced once: its fate (the rule that
drops it, the rules that change it, what the relay does after the rules) is kept in a bounded memo, and
samples are counted per fate, so memory stays bounded by the memo and the number of families, whatever
the body's size. A sample line is one series: `dropped` and `changed` count samples.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

from relay.errors import InvalidExpositionError
from relay.exposition import (
    EXCERPT_SOURCE,
    LINE_ERRORS,
    LineBlocks,
    is_openmetrics_series,
    located,
    opens_quote,
    parse_metadata,
    parse_openmetrics_metadata,
    parse_series,
)
from relay.pyengine import (
    DUPLICATE_WATCH_LIMIT,
    missing_eof,
    openmetrics_line_error,
    sample_limit_error,
    split_exemplar,
)
from relay.relabel_trace import RuleInfo, rule_infos, rule_json
from relay.rules import Rules

TOP_FAMILIES = 5
"""Families listed per rule: those with the most samples it dropped or changed."""
SUMMARY_MEMO_SIZE = 100_000
"""Series texts whose fate a summary remembers (a body rarely repeats one, so the memo stays small)."""
_FAMILY_LIMIT = 50_000
_BLANK = re.compile(rb"[ \t]")
_OTHER_FAMILIES = "(other families)"  # past _FAMILY_LIMIT names, a pathological body's rest is pooled


# --- a whole body ----------------------------------------------------------------------------------------


class _Fate(NamedTuple):
    """What happens to the samples of one series text; equal fates are counted together."""

    family: str
    dropped_at: int  # index of the rule that drops it, -1 if none does
    changed_by: tuple[int, ...]  # the rules that change its labels, before any drop
    relay_drop: str  # the relay's own reason to leave out a series the rules kept (DROP_REASONS), or ''


class _Memo(NamedTuple):
    fate: _Fate
    identity: int  # equal for equal output label sets: finds duplicates, as the engines do
    limit_error: str


_INVALID = _Memo(_Fate("", -1, (), "invalid_line"), 0, "")


@dataclass(frozen=True, slots=True)
class FamilyEffect:
    """How many samples of one family a rule dropped and changed."""

    name: str
    dropped: int
    changed: int

    def counts(self) -> str:
        """`12 dropped, 3 changed`, leaving out a zero."""
        parts = [f"{self.dropped} dropped"] if self.dropped else []
        parts += [f"{self.changed} changed"] if self.changed else []
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class RuleSummary:
    """One rule's counts over a body."""

    rule: RuleInfo
    samples_in: int
    samples_out: int
    dropped: int
    changed: int
    families: tuple[FamilyEffect, ...]  # the TOP_FAMILIES most affected, most first


@dataclass(frozen=True, slots=True)
class Summary:
    """A body relabeled: totals, samples left out by reason, each rule's counts, and what would fail."""

    upstream: str
    openmetrics: bool
    samples_in: int
    samples_out: int  # what the relay would relay
    dropped: dict[str, int]  # by reason, as metrics_relay_samples_dropped_total counts them
    rules: tuple[RuleSummary, ...]
    warnings: tuple[str, ...]  # reasons the relay would fail this scrape (limits)


class BodySummarizer:
    """Reads one body, chunk by chunk, and counts what each rule does; `finish()` gives the Summary.

    Raises InvalidExpositionError or LimitExceededError where the relay would fail the scrape for the
    body's text, naming the line as the engines do (with `on_invalid_line: drop`, invalid lines are counted
    instead).
    """

    def __init__(self, rules: Rules, *, openmetrics: bool = False) -> None:
        self._rules = rules
        self._infos = rule_infos(rules.upstream)
        self._openmetrics = openmetrics
        self._blocks = LineBlocks(rules.limits.line_length_limit)
        self._tails = rules.openmetrics_tails if openmetrics else rules.tails
        self._sample_lines = 1  # the lines of the sample being read (more when a raw newline continues it)
        self._ended = False  # OpenMetrics' `# EOF` was read
        self._memo: dict[bytes, _Memo] = {}
        self._memo_size = min(rules.memo_size, SUMMARY_MEMO_SIZE)
        self._fate_pool: dict[_Fate, _Fate] = {}  # one object per distinct fate, shared by the memo's entries
        self._fates: Counter[_Fate] = Counter()
        self._families: set[str] = set()
        self._seen: set[int] = set()
        self._limit_error = ""

    def feed(self, chunk: bytes) -> None:
        """Count the samples of the lines that `chunk` completes."""
        self._read(self._blocks.feed(chunk), final=False)

    def finish(self) -> Summary:
        """Count the last line, check the body's end, and sum up."""
        self._read(self._blocks.finish(), final=True)
        if self._openmetrics and not self._ended:
            raise missing_eof()
        return self._summary()

    def _read(self, lines: list[bytes], *, final: bool) -> None:
        index = 0
        try:
            while index < len(lines):
                taken = self._line(lines, index, final=final)
                if not taken:
                    return  # a sample the next chunk continues: the block reader has it again
                index += taken
        except LINE_ERRORS as error:
            # Named as the engines name it: by its first line, the excerpt spanning the lines it joined.
            text = b"\n".join(lines[index : index + self._sample_lines])[:EXCERPT_SOURCE]
            blocks = self._blocks
            raise located(error, blocks.first_line + index, blocks.offset_of(lines, index), text) from error

    def _line(self, lines: list[bytes], index: int, *, final: bool) -> int:
        """Count the line at `index`; the number of lines it took (0: a sample the next chunk goes on)."""
        line = lines[index]
        self._sample_lines = 1
        if self._openmetrics and (self._ended or not line or line[0] in b" \t"):
            raise openmetrics_line_error(line, ended=self._ended)
        line = line.lstrip(b" \t")
        if not line:
            return 1
        if line[0] == ord("#"):
            self._comment(line)
            return 1
        if self._openmetrics:
            line = split_exemplar(line)[0]
        end = line.rfind(b"}")
        series, tail = (line[: end + 1], line[end + 1 :]) if end >= 0 else _split_bare(line)
        try:
            memo = self._memo.get(series) or self._learn(series)
        except InvalidExpositionError:
            if self._openmetrics or not opens_quote(line):
                raise
            memo = _INVALID
        if memo is _INVALID and not self._openmetrics and opens_quote(line):
            return self._continued(lines, index, line, final=final)
        self._count(memo, tail)
        return 1

    def _continued(self, lines: list[bytes], index: int, line: bytes, *, final: bool) -> int:
        """A raw newline inside a quoted label value, which Prometheus' lexer takes: count the joined sample
        (the number of lines it took), or hand its lines back to the block reader (0)."""
        joined, end_index = line, index + 1
        while opens_quote(joined):
            if end_index == len(lines):
                if final:
                    break  # the body ends inside the value: the sample is invalid as it stands
                self._blocks.push_back(b"\n".join(lines[index:end_index]))
                return 0
            joined += b"\n" + lines[end_index]
            end_index += 1
        self._sample_lines = end_index - index
        end = joined.rfind(b"}")
        series, tail = (joined[: end + 1], joined[end + 1 :]) if end >= 0 else (joined, b"")
        self._count(self._memo.get(series) or self._learn(series), tail)
        return end_index - index

    def _comment(self, line: bytes) -> None:
        if not self._openmetrics:
            parse_metadata(line)  # raises for a malformed HELP or TYPE line
        elif parse_openmetrics_metadata(line).kind == b"EOF":
            self._ended = True

    def _count(self, memo: _Memo, tail: bytes) -> None:
        fate = memo.fate
        if fate.relay_drop != "invalid_line":
            canonical = self._tails.get(tail) or self._rules.learn_tail(tail, openmetrics=self._openmetrics)
            if canonical is None:  # an invalid value with `on_invalid_line: drop`
                fate = _INVALID.fate
            elif fate.dropped_at < 0 and not fate.relay_drop:
                fate = self._deduplicated(memo)
        self._fates[fate] += 1

    def _deduplicated(self, memo: _Memo) -> _Fate:
        """The fate of a kept sample, or its duplicate fate when its labels were already relayed."""
        if memo.limit_error and not self._limit_error:
            self._limit_error = memo.limit_error
        if not self._rules.rewrites_labels:
            return memo.fate
        if memo.identity in self._seen:
            return memo.fate._replace(relay_drop="duplicate")
        if len(self._seen) < DUPLICATE_WATCH_LIMIT:
            self._seen.add(memo.identity)
        return memo.fate

    def _learn(self, series: bytes) -> _Memo:
        """Trace a series text not seen before; remember it while the memo has room."""
        rules = self._rules
        try:
            labels = parse_series(series).labels
            if self._openmetrics and not is_openmetrics_series(series):
                rules.openmetrics_refusal(series)  # raises, unless `on_invalid_line: drop`
                return _INVALID
        except InvalidExpositionError:
            if not rules.drop_invalid_lines:
                raise
            return _INVALID
        dropped_at = -1
        changed_by = []
        before = labels
        for index, (_, after) in enumerate(rules.program.trace(labels)):
            if after is None:
                dropped_at = index
                break
            if after != before:
                changed_by.append(index)
            before = after
        if dropped_at < 0 and not before:  # no label left: the last change dropped it
            dropped_at = changed_by.pop()
        identity, limit_error, relay_drop = 0, "", ""
        if dropped_at < 0:  # what the relay makes of what the rules kept
            result = rules.relabel_series(series)
            identity, limit_error = result.identity, result.limit_error
            relay_drop = result.drop_reason if result.output is None else ""
        fate = _Fate(self._family(labels["__name__"]), dropped_at, tuple(changed_by), relay_drop)
        memo = _Memo(self._fate_pool.setdefault(fate, fate), identity, limit_error)
        if len(self._memo) < self._memo_size:
            self._memo[series] = memo
        return memo

    def _family(self, name: str) -> str:
        """The family a series is counted in: its metric name, unless the body has too many names."""
        if name not in self._families:
            if len(self._families) >= _FAMILY_LIMIT:
                return _OTHER_FAMILIES
            self._families.add(name)
        return name

    def _summary(self) -> Summary:
        count = len(self._infos)
        reached = [0] * count
        dropped = [0] * count
        changed = [0] * count
        effects: list[dict[str, list[int]]] = [{} for _ in range(count)]  # family: [dropped, changed]
        left_out: Counter[str] = Counter()
        samples_in = 0
        for fate, samples in self._fates.items():
            samples_in += samples
            if fate.relay_drop == "invalid_line":
                left_out["invalid_line"] += samples
                continue
            last = fate.dropped_at if fate.dropped_at >= 0 else count - 1
            for index in range(last + 1):
                reached[index] += samples
            for index in fate.changed_by:
                changed[index] += samples
                effects[index].setdefault(fate.family, [0, 0])[1] += samples
            if fate.dropped_at >= 0:
                dropped[fate.dropped_at] += samples
                effects[fate.dropped_at].setdefault(fate.family, [0, 0])[0] += samples
                left_out["relabel"] += samples
            elif fate.relay_drop:
                left_out[fate.relay_drop] += samples
        rules = tuple(
            RuleSummary(
                info,
                reached[index],
                reached[index] - dropped[index],
                dropped[index],
                changed[index],
                _top_families(effects[index]),
            )
            for index, info in enumerate(self._infos)
        )
        samples_out = samples_in - sum(left_out.values())
        warnings = [self._limit_error] if self._limit_error else []
        sample_limit = self._rules.limits.sample_limit
        if sample_limit and samples_out > sample_limit:
            warnings.append(sample_limit_error(sample_limit).message)
        return Summary(
            upstream=self._rules.upstream.name,
            openmetrics=self._openmetrics,
            samples_in=samples_in,
            samples_out=samples_out,
            dropped={reason: left_out[reason] for reason in sorted(left_out)},
            rules=rules,
            warnings=tuple(f"the relay would fail this scrape: {warning}" for warning in warnings),
        )


def _split_bare(line: bytes) -> tuple[bytes, bytes]:
    """A sample line without braces: the metric name, and what follows it (from the first blank)."""
    blank = _BLANK.search(line)
    end = blank.start() if blank is not None else len(line)
    return line[:end], line[end:]


def _top_families(effects: dict[str, list[int]]) -> tuple[FamilyEffect, ...]:
    ranked = sorted(effects.items(), key=lambda item: (-(item[1][0] + item[1][1]), item[0]))
    return tuple(FamilyEffect(name, counts[0], counts[1]) for name, counts in ranked[:TOP_FAMILIES])


def summary_json(summary: Summary) -> dict[str, Any]:
    """The summary as INTERFACE.md's JSON object, plus `format`, `dropped`, `warnings`, `families`."""
    return {
        "upstream": summary.upstream,
        "format": "openmetrics" if summary.openmetrics else "text",
        "samples_in": summary.samples_in,
        "samples_out": summary.samples_out,
        "dropped": summary.dropped,
        "warnings": list(summary.warnings),
        "rules": [
            {
                **rule_json(rule.rule),
                "samples_in": rule.samples_in,
                "samples_out": rule.samples_out,
                "dropped": rule.dropped,
                "changed": rule.changed,
                "families": [
                    {"name": family.name, "dropped": family.dropped, "changed": family.changed}
                    for family in rule.families
                ],
            }
            for rule in summary.rules
        ],
    }


DROP_REASON_WORDS = {
    "relabel": "dropped by the rules",
    "duplicate": "duplicates (series the rules made equal)",
    "invalid_name": "without a valid metric name after the rules",
    "utf8_name": "with names the text format 0.0.4 cannot carry",
    "invalid_line": "invalid lines (on_invalid_line: drop)",
}
"""Each reason a summary counts samples as left out for (rules.DROP_REASONS), in words."""


def left_out_text(summary: Summary) -> str:
    """`8169 dropped by the rules, 12 duplicates (…)`, or '' when nothing was left out."""
    return ", ".join(
        f"{count} {DROP_REASON_WORDS.get(reason, reason)}" for reason, count in summary.dropped.items()
    )


def render_summary(summary: Summary) -> str:
    """The summary as a table for a terminal, then each rule's most affected families."""
    lines = [f"upstream {summary.upstream}: {summary.samples_in} samples in, {summary.samples_out} out"]
    if summary.dropped:
        lines.append(f"left out: {left_out_text(summary)}")
    lines.extend(summary.warnings)
    lines.append("")
    if not summary.rules:
        lines.append("no metric_relabel_configs: every valid series passes unchanged")
        return "\n".join(lines) + "\n"
    header = ("rule", "action", "samples in", "samples out", "dropped", "changed")
    rows = [(str(rule.rule.index), rule.rule.action, *map(str, _counts(rule))) for rule in summary.rules]
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    for row in (header, *rows):
        cells = (
            cell.ljust(width) if column == 1 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        lines.append("  ".join(cells).rstrip())
    for rule in summary.rules:
        lines.append("")
        lines.append(f"rule {rule.rule.index} ({rule.rule.action}), {rule.rule.where()}:")
        effects = [family.counts() for family in rule.families]
        width = max(map(len, effects), default=0)
        lines.extend(
            f"  {effect.rjust(width)}  {family.name}"
            for effect, family in zip(effects, rule.families, strict=True)
        )
        if not rule.families:
            lines.append("  no sample dropped or changed")
    return "\n".join(lines) + "\n"


def _counts(rule: RuleSummary) -> tuple[int, int, int, int]:
    return rule.samples_in, rule.samples_out, rule.dropped, rule.changed
