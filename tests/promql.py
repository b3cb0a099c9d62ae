"""PromQL as the deploy checks read it: the metric names an expression selects, and the relay's own names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from relay.selfmetrics import SelfMetrics

# Aggregation operators: followed by `by`/`without` before their parenthesis, as in `sum by (le) (x)`.
AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ]
)
# Keywords whose parenthesised list holds label names.
LABEL_LIST_KEYWORDS = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])
# Words that are never metric names where they stand (`inf` and `nan` are numbers).
KEYWORDS = LABEL_LIST_KEYWORDS | frozenset(["and", "or", "unless", "offset", "bool", "atan2", "inf", "nan"])

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w:]))
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<identifier>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<operator>=~|!~|==|!=|<=|>=|[-+*/%^<>=@,(){}])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    """One lexical element of an expression: its kind (a group of _TOKEN) and its text."""

    kind: str
    text: str


def tokens(expr: str) -> list[Token]:
    """The expression's tokens without whitespace and comments; ValueError at an unknown character."""
    found = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read PromQL at offset {position}: {expr[position : position + 20]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            found.append(Token(kind, match.group()))
        position = match.end()
    return found


def metric_names(expr: str) -> frozenset[str]:
    """Every metric name the expression selects, by bare name or by a `__name__="..."` matcher.

    Function and aggregation names, keywords, label names (in `{}` and in the lists of `by`, `without`,
    `on`, `ignoring`, `group_left`, `group_right`), numbers, durations and strings are not metric names.
    A `__name__` matched by a regular expression cannot be named, so it is refused.
    """
    return frozenset(_names(tokens(expr)))


def _names(items: list[Token]) -> Iterator[str]:
    index = 0
    while index < len(items):
        token = items[index]
        following = items[index + 1].text if index + 1 < len(items) else ""
        if token.text == "{":
            index = yield from _matcher_names(items, index)
            continue
        if token.kind == "identifier":
            word = token.text.lower()
            if word in LABEL_LIST_KEYWORDS and following == "(":
                index = items.index(Token("operator", ")"), index)  # a label list never nests
            elif following == "(" or (word in AGGREGATIONS and following in {"by", "without"}):
                pass  # a function or an aggregation
            elif word not in KEYWORDS:
                yield token.text
        index += 1


def _matcher_names(items: list[Token], start: int) -> Iterator[str]:
    """Yield the name a `{...}` block gives (a `__name__` equality matcher, or a quoted name standing alone,
    as Prometheus 3 writes UTF-8 names); return the index after the `}`."""
    end = items.index(Token("operator", "}"), start)
    block = items[start + 1 : end]
    for position, token in enumerate(block):
        neighbours = {block[i].text for i in (position - 1, position + 1) if 0 <= i < len(block)}
        if token.kind == "string" and neighbours <= {","}:
            yield _unquote(token.text)
        elif token.kind == "identifier" and token.text == "__name__":
            operator, value = block[position + 1], block[position + 2]
            if operator.text != "=":
                raise ValueError(f"__name__{operator.text}{value.text}: a metric name matched by a pattern")
            yield _unquote(value.text)
    return end + 1


def _unquote(literal: str) -> str:
    """The text of a quoted metric name; escapes are refused, since no name the relay exposes needs one."""
    if "\\" in literal:
        raise ValueError(f"{literal}: escape sequences in a metric name are not read")
    return literal[1:-1]


def exposed_names(metrics: SelfMetrics | None = None) -> frozenset[str]:
    """The name of every series a relay's /relay/metrics can carry, from a real SelfMetrics registry.

    Taken from each family's type, so that labelled families without series yet count too.
    """
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("", "_count", "_sum"),
        "info": ("_info",),
    }
    registry = (metrics or SelfMetrics()).registry
    return frozenset(
        family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))
    )
