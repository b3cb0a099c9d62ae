"""One series through an upstream's relabel rules, step by step, and the rules as people name them (pure).

The series is given as people have it at hand: `name{a="b"}`, `{__name__="name",a="b"}` or a line pasted
from /metrics with its value; the trace shows the label set after each rule and the verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from relay.config import UpstreamConfig
from relay.errors import InvalidExpositionError
from relay.exposition import escape_label_value, parse_series, split_openmetrics_tail, split_tail
from relay.goregexp import go_lower
from relay.relabel import Labels
from relay.rules import Rules

# --- the rules, as people name them --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """One rule as the configuration writes it: its index, action, location and line in the file."""

    index: int
    action: str
    location: str
    line: int | None

    def where(self) -> str:
        """`upstreams[0].metric_relabel_configs[3] (line 41)`, for people."""
        return f"{self.location} (line {self.line})" if self.line is not None else self.location


def rule_infos(upstream: UpstreamConfig) -> tuple[RuleInfo, ...]:
    """The upstream's rules in order, as RuleInfo."""
    return tuple(
        RuleInfo(index, go_lower(spec.action), spec.location, spec.lines.get(""))
        for index, spec in enumerate(upstream.metric_relabel_configs)
    )


def format_labels(labels: Labels) -> str:
    """A label set as `{__name__="x", a="b"}`, for people to read."""
    return "{" + ", ".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items()) + "}"


# --- one series ------------------------------------------------------------------------------------------

_SERIES_PREFIX = re.compile(rb'[ \t]*([a-zA-Z_:][a-zA-Z0-9_:]*)?[ \t]*(\{(?:[^"}]|"(?:\\.|[^\\"])*")*\})?')
_LABEL_ITEM = re.compile(
    rb'[ \t]*(?:([a-zA-Z_][a-zA-Z0-9_]*)|"((?:\\.|[^\\"])*)")[ \t]*=[ \t]*"((?:\\.|[^\\"])*)"[ \t]*,?'
)
_SERIES_EXAMPLES = 'name{a="b"}, {__name__="name",a="b"} or a line of /metrics'


def parse_series_argument(text: str) -> tuple[bytes, Labels]:
    """The series text and labels of `name{a="b"}`, `{__name__="name",a="b"}` or a sample line pasted
    from /metrics (value, timestamp and exemplar allowed and ignored); ValueError saying what is wrong."""
    data = text.strip().encode()
    prefix = _SERIES_PREFIX.match(data)
    if prefix is None or not (prefix[1] or prefix[2]):
        raise ValueError(f"expected a series such as {_SERIES_EXAMPLES}, not {text[:80]!r}")
    series = _with_name_outside(prefix[1], prefix[2]) if prefix[2] else prefix[1]
    try:
        labels = parse_series(series).labels
    except InvalidExpositionError as exc:
        raise ValueError(f"{exc.message.removeprefix('invalid exposition: ')} in {text[:80]!r}") from None
    _check_value_part(data[prefix.end() :], text)
    return series, labels


def _with_name_outside(name: bytes | None, braces: bytes) -> bytes:
    """`{__name__="x",a="b"}` as `{"x",a="b"}` (the form the text format reads); other texts as they are."""
    body = braces[1:-1]
    position = 0
    while position < len(body):
        item = _LABEL_ITEM.match(body, position)
        if item is None:
            break  # not a plain label list: parse_series says what is wrong with it
        if item[1] == b"__name__" or item[2] == b"__name__":
            if name is not None:
                raise ValueError("the metric name is given twice: before the braces and as __name__")
            rest = (body[:position] + body[item.end() :]).strip(b" \t,")
            return b'{"' + item[3] + b'"' + (b"," + rest if rest else b"") + b"}"
        position = item.end()
    return (name or b"") + braces


def _check_value_part(rest: bytes, text: str) -> None:
    """What may follow a pasted series: nothing, or a value, a timestamp and an exemplar."""
    value_part = rest.split(b" # ", 1)[0].strip()
    if not value_part:
        return
    tail = b" " + b" ".join(value_part.split())
    try:
        split_tail(tail)
    except InvalidExpositionError:
        try:
            split_openmetrics_tail(tail)  # an OpenMetrics line: its timestamp is in (fractional) seconds
        except InvalidExpositionError:
            raise ValueError(
                f"after the series, expected a value and an optional timestamp, not {rest[:60]!r}"
            ) from None


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One rule's effect on the traced series: the labels before it, and after it (None: dropped)."""

    rule: RuleInfo
    before: Labels
    after: Labels | None

    @property
    def changed(self) -> bool:
        """Whether the rule changed the label set (dropping is not changing)."""
        return self.after is not None and self.after != self.before


@dataclass(frozen=True, slots=True)
class SeriesTrace:
    """A series through every rule of an upstream, up to the one that drops it, and the relay's verdict."""

    upstream: str
    series: Labels
    steps: tuple[TraceStep, ...]
    rule_count: int
    result: Labels | None  # the labels after every rule; None when dropped
    dropped_by: RuleInfo | None
    not_relayed: str  # why the relay leaves out a series the rules kept, or ''

    @property
    def verdict(self) -> str:
        """`kept as {…}` or `dropped by rule N (action)`, with what the relay does after the rules."""
        if self.dropped_by is not None:
            return f"dropped by rule {self.dropped_by.index} ({self.dropped_by.action})"
        if self.result is None:
            return "dropped: the rules left no label"
        kept = f"kept as {format_labels(self.result)}"
        return f"{kept}, but not relayed: {self.not_relayed}" if self.not_relayed else kept


_NOT_RELAYED = {
    "invalid_name": "it has no valid metric name after relabeling",
    "utf8_name": "a name needs UTF-8 quoting, which the text format 0.0.4 cannot carry",
}


def trace_series(rules: Rules, series: bytes, labels: Labels) -> SeriesTrace:
    """What each of `rules`' rules does to the series (from parse_series_argument)."""
    infos = rule_infos(rules.upstream)
    steps = []
    before = labels
    dropped_by = None
    for info, (_, after) in zip(infos, rules.program.trace(labels), strict=False):
        steps.append(TraceStep(info, before, after))
        if after is None:
            dropped_by = info
            break
        before = after
    result = None if dropped_by is not None or not before else before
    verdict = rules.relabel_series(series)
    not_relayed = _NOT_RELAYED.get(verdict.drop_reason, "") if result is not None else ""
    return SeriesTrace(rules.upstream.name, labels, tuple(steps), len(infos), result, dropped_by, not_relayed)


def render_trace(trace: SeriesTrace) -> str:
    """The trace as plain text for a terminal or curl."""
    lines = [
        f"upstream {trace.upstream}: {trace.rule_count} rule(s)",
        f"series   {format_labels(trace.series)}",
    ]
    for step in trace.steps:
        lines.append(f"rule {step.rule.index:<3} {step.rule.action:<9} {step.rule.where()}")
        if step.after is None:
            lines.append("         dropped")
        elif step.changed:
            lines.append(f"         {label_changes(step.before, step.after)}")
            lines.append(f"         now {format_labels(step.after)}")
        else:
            lines.append("         unchanged")
    unreached = trace.rule_count - len(trace.steps)
    if unreached:
        lines.append(f"         ({unreached} later rule(s) not reached)")
    if not trace.rule_count:
        lines.append("no metric_relabel_configs: the series passes unchanged")
    lines.append(f"verdict  {trace.verdict}")
    return "\n".join(lines) + "\n"


def label_changes(before: Labels, after: Labels) -> str:
    """`+a="1" -b ~c="2"`: labels added, removed and given another value."""
    added = [f'+{name}="{escape_label_value(value)}"' for name, value in after.items() if name not in before]
    removed = [f"-{name}" for name in before if name not in after]
    changed = [
        f'~{name}="{escape_label_value(value)}"'
        for name, value in after.items()
        if name in before and before[name] != value
    ]
    return " ".join(added + removed + changed)


def trace_json(trace: SeriesTrace) -> dict[str, Any]:
    """The trace as a JSON-ready object."""
    return {
        "upstream": trace.upstream,
        "series": trace.series,
        "steps": [
            {**rule_json(step.rule), "before": step.before, "after": step.after, "changed": step.changed}
            for step in trace.steps
        ],
        "result": trace.result,
        "dropped_by": trace.dropped_by.index if trace.dropped_by is not None else None,
        "verdict": trace.verdict,
    }


def rule_json(rule: RuleInfo) -> dict[str, Any]:
    return {"index": rule.index, "action": rule.action, "location": rule.location, "line": rule.line}
