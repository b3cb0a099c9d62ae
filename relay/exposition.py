"""The Prometheus text format 0.0.4 as bytes: whole lines from chunks, series syntax, escaping (pure).

The grammar is Prometheus' own (model/textparse/promlex.l): blank lines and `#` comments are allowed,
whitespace may surround every token, a label set may end in a comma (and its pairs may even lack commas),
metric and label names may be quoted UTF-8 strings inside the braces (`{"my.metric", "a.b"="x"}`), values
are Go floats without `_`, `p` or hexadecimal, timestamps are int64 milliseconds. Values and timestamps
are never converted: they pass through as the bytes they arrived as.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import NamedTuple

from relay.errors import InvalidExpositionError, LimitExceededError

LEGACY_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LEGACY_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_TYPES = frozenset({b"counter", b"gauge", b"histogram", b"summary", b"untyped"})
OPENMETRICS_TYPES = frozenset(
    {b"counter", b"gauge", b"histogram", b"gaugehistogram", b"stateset", b"info", b"summary", b"unknown"}
)
# The samples a family of each type may hold, by suffix of the family name (model/textparse's
# isSeriesPartOfFamily, with OpenMetrics' suffixes); every type also holds the bare family name.
FAMILY_SUFFIXES: dict[bytes, tuple[str, ...]] = {
    b"counter": ("_total", "_created"),
    b"histogram": ("_bucket", "_sum", "_count", "_created"),
    b"gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    b"summary": ("_sum", "_count", "_created"),
    b"info": ("_info",),
}
EOF_LINE = b"# EOF"

_QUOTED = r'"((?:\\.|[^\\"])*)"'
_LABEL_ITEM = re.compile(
    rf"[ \t]*(?:([a-zA-Z_][a-zA-Z0-9_]*)|{_QUOTED})[ \t]*(?:(=)[ \t]*(?:{_QUOTED})?)?[ \t]*(,?)[ \t]*"
)
_SIMPLE_SERIES = re.compile(
    rb'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*",)*[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")\})?'
)
_SIMPLE_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')
_BARE_SERIES = re.compile(rb"[ \t]*([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*(?:\{(.*)\})?[ \t]*", re.DOTALL)
_BRACED_SERIES = re.compile(rb"[ \t]*\{(.*)\}[ \t]*", re.DOTALL)
_FINITE_GO_FLOAT = rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_GO_FLOAT = _FINITE_GO_FLOAT + rb"|[+-]?(?:[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)|[nN][aA][nN]"
_TAIL = re.compile(rb"[ \t]*(" + _GO_FLOAT + rb")(?:[ \t]+([0-9]+))?[ \t]*")
_NAME_OR_QUOTED = rb'([a-zA-Z_:][a-zA-Z0-9_:]*|"(?:\\.|[^\\"])*")'
_META = re.compile(rb"#[ \t]+(HELP|TYPE)[ \t]+" + _NAME_OR_QUOTED + rb"(.*)", re.DOTALL)
_OPENMETRICS_META = re.compile(rb"# (HELP|TYPE|UNIT) " + _NAME_OR_QUOTED + rb" (.*)", re.DOTALL)
# OpenMetrics timestamps are numbers of seconds: NaN and infinities are no time (Prometheus refuses them).
_OPENMETRICS_TAIL = re.compile(rb" (" + _GO_FLOAT + rb")(?: (" + _FINITE_GO_FLOAT + rb"))?")
_EXEMPLAR = re.compile(
    rb' # \{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:\\.|[^\\"\n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:\\.|[^\\"\n])*")*)?\}'
    rb" (?:" + _GO_FLOAT + rb")(?: (" + _FINITE_GO_FLOAT + rb"))?"
)
_OPENMETRICS_QUOTED = rb'"(?:\\.|[^\\"\n])*"'
_OPENMETRICS_ITEM = (
    rb"(?:(?:[a-zA-Z_][a-zA-Z0-9_]*|"
    + _OPENMETRICS_QUOTED
    + rb")="
    + _OPENMETRICS_QUOTED
    + rb"|"
    + _OPENMETRICS_QUOTED
    + rb")"
)
_OPENMETRICS_SERIES = re.compile(
    rb"(?:[a-zA-Z_:][a-zA-Z0-9_:]*)?(?:\{(?:"
    + _OPENMETRICS_ITEM
    + rb"(?:,"
    + _OPENMETRICS_ITEM
    + rb")*)?\})?"
)
_OPENS_QUOTE = re.compile(rb'[^{"#]*\{(?:[^"]|"(?:\\.|[^\\"])*")*"(?:\\.|[^\\"])*', re.DOTALL)
_INT64_MAX = (1 << 63) - 1
_UNESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_HELP_UNESCAPES = {"\\\\": "\\", "\\n": "\n"}
_HELP_UNESCAPE = re.compile(r"\\[\\n]")
_UNESCAPE = re.compile(r'\\[\\"n]')


@dataclass(frozen=True, slots=True)
class Metadata:
    """A metadata line: the family it names, its kind, and its text (the type, for TYPE)."""

    family: str
    kind: bytes  # b"HELP", b"TYPE", and in OpenMetrics b"UNIT" and b"EOF" (with an empty family)
    text: bytes


class LineBlocks:
    """Cuts a body's chunks into blocks of whole lines, carrying a partial last line to the next chunk."""

    def __init__(self, line_length_limit: int) -> None:
        self._limit = line_length_limit
        # The unfinished line, in pieces: joining only once it ends keeps a long line linear in time.
        self._carry: list[bytes] = []
        self._carry_length = 0
        self.last_block = b""
        """The bytes of the lines last returned, newlines between them (callers may send it as it is)."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The whole lines completed by `chunk` (without their newlines); raise if one is over the limit."""
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._carry.append(chunk)
            self._carry_length += len(chunk)
            self._check(self._carry_length)
            return []
        if self._carry:
            self._carry.append(chunk[:cut])
            data = b"".join(self._carry)
        else:
            data = chunk[:cut]
        rest = chunk[cut + 1 :]
        self._carry = [rest] if rest else []
        self._carry_length = len(rest)
        self._check(len(rest))
        self.last_block = data
        lines = data.split(b"\n")
        if self._limit and len(data) > self._limit:  # no line of a block is longer than the block
            self._check(max(map(len, lines)))
        return lines

    def push_back(self, text: bytes) -> None:
        """Lines of a sample that goes on past this block (a raw newline in a quoted value): read them again
        with the next chunk."""
        self._carry.insert(0, text + b"\n")
        self._carry_length += len(text) + 1

    def finish(self) -> list[bytes]:
        """The last line when the body did not end in a newline (Prometheus accepts that)."""
        last = b"".join(self._carry)
        self._carry, self._carry_length = [], 0
        self.last_block = last
        return [last] if last else []

    def _check(self, length: int) -> None:
        if self._limit and length > self._limit:
            raise line_too_long(self._limit)


def line_too_long(limit: int) -> LimitExceededError:
    """The error for a line longer than line_length_limit."""
    return LimitExceededError(f"a line of the upstream body exceeds line_length_limit ({limit} bytes)")


class ParsedSeries(NamedTuple):
    """A series text read: its name, its labels (with `__name__`), and facts about the text."""

    name: str
    labels: dict[str, str]
    dropped_empty: bool  # an empty label value was left out
    canonical: bool  # the text is already in the form serialize_series writes, if nothing was dropped


def parse_series(series: bytes) -> ParsedSeries:
    """Name, labels and facts about the text, from `name{a="b",...}`; InvalidExpositionError if invalid.

    The common case (`name{a="b",c="d"}`, classic names, nothing escaped, no blanks) takes two regular
    expressions; everything else goes through the full grammar.
    """
    simple = _SIMPLE_SERIES.fullmatch(series)
    if simple is not None:
        body = simple[2]
        try:
            pairs = _SIMPLE_PAIR.findall(body.decode("utf-8")) if body else []
        except UnicodeDecodeError:
            raise _invalid("invalid UTF-8", series) from None
        name = sys.intern(simple[1].decode("ascii"))  # one string per family, not per series
        labels = {"__name__": name}
        labels.update(pairs)
        if len(labels) == len(pairs) + 1:  # no label twice, and none called __name__
            if body is None or b'=""' not in body:
                return ParsedSeries(name, labels, dropped_empty=False, canonical=True)
            kept = {label: value for label, value in labels.items() if value}
            return ParsedSeries(name, kept, dropped_empty=True, canonical=True)
    return _parse_series_in_full(series)


def _parse_series_in_full(series: bytes) -> ParsedSeries:
    try:
        text = series.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("invalid UTF-8", series) from None
    bare = _BARE_SERIES.fullmatch(series)
    if bare is None and not _BRACED_SERIES.fullmatch(series):
        raise _invalid("expected a metric name or '{'", series)
    has_braces = bare is None or bare[2] is not None
    body = text[text.index("{") + 1 : text.rindex("}")] if has_braces else ""
    name = bare[1].decode("ascii") if bare is not None else None
    name, labels, dropped_empty = _parse_label_body(body, name, series)
    if not name:
        raise _invalid("metric name not set", series)
    return ParsedSeries(name, {"__name__": name, **labels}, dropped_empty, canonical=False)


def _parse_label_body(body: str, name: str | None, series: bytes) -> tuple[str | None, dict[str, str], bool]:
    """The pairs between the braces; a quoted string alone is the metric name."""
    labels: dict[str, str] = {}
    dropped_empty = False
    position = 0
    while body[position:].strip(" \t"):
        item = _LABEL_ITEM.match(body, position)
        if item is None or item.end() == position:
            raise _invalid("expected a label name", series)
        bare_name, quoted_name, equals, value, comma = item.groups()
        position = item.end()
        if equals is None:
            # A quoted string alone is the metric name, when a comma or the closing brace follows it.
            if quoted_name is None or not (comma or position == len(body)):
                raise _invalid("expected '=' after a label name", series)
            if name is not None:
                raise _invalid("metric name already set", series)
            name = unescape(quoted_name)
            continue
        if value is None:
            raise _invalid("expected a quoted label value", series)
        label = bare_name if bare_name is not None else unescape(quoted_name)
        if not label or label == "__name__" or label in labels:
            raise _invalid(f"label name {label!r} is empty, reserved or repeated", series)
        if value:
            labels[label] = unescape(value)
        else:
            dropped_empty = True
    return name, labels, dropped_empty


def is_openmetrics_series(series: bytes) -> bool:
    """Whether a series text (valid text format) is also in OpenMetrics' form: no blanks, a comma between
    labels and none before the first or after the last (Prometheus' OpenMetrics parser refuses the rest)."""
    return _OPENMETRICS_SERIES.fullmatch(series) is not None


def openmetrics_series_error(series: bytes) -> InvalidExpositionError:
    """The error for a series text in the text format's looser form inside an OpenMetrics body."""
    return _invalid(
        "OpenMetrics label sets have no blanks and a comma between labels, none at the end", series
    )


def opens_quote(line: bytes) -> bool:
    """Whether a sample line ends inside a quoted label value (or quoted name): the text format's lexer takes
    a raw newline there, so the sample goes on in the next line."""
    return _OPENS_QUOTE.fullmatch(line) is not None


def split_tail(tail: bytes) -> tuple[bytes, bytes | None]:
    """Value and timestamp tokens from what follows a series; raise InvalidExpositionError if invalid."""
    match = _TAIL.fullmatch(tail)
    if match is None:
        raise _invalid("expected a value and an optional timestamp after the series", tail)
    value, timestamp = match[1], match[2]
    _check_range(value)
    # Length first: int() of a huge digit string is slow, and refused past 4300 digits.
    if timestamp is not None and (len(timestamp) > 19 or int(timestamp) > _INT64_MAX):
        raise _invalid("timestamp out of range", timestamp)
    return value, timestamp


def parse_metadata(line: bytes) -> Metadata | None:
    """A HELP or TYPE line as Metadata; None for any other comment. Raises for an invalid one."""
    match = _META.fullmatch(line)
    if match is None:
        if re.match(rb"#[ \t]+(HELP|TYPE)[ \t]", line):
            raise _invalid("expected a metric name after HELP or TYPE", line)
        return None
    rest = match[3]
    # The text starts one character after the name (promlex's {C}*), unless only blanks follow it.
    return _metadata(line, match[1], match[2], b"" if not rest.strip(b" \t") else rest[1:], METRIC_TYPES)


def _check_range(value: bytes) -> None:
    """Go's ParseFloat refuses a finite number too large for a float64 (Python would make it inf)."""
    lowered = value.lower()
    if b"inf" not in lowered and b"nan" not in lowered and float(value) in (float("inf"), float("-inf")):
        raise _invalid("value out of range", value)


def parse_openmetrics_metadata(line: bytes) -> Metadata:
    """An OpenMetrics `# HELP/TYPE/UNIT name text` or `# EOF` line; any other comment is invalid there."""
    if line == EOF_LINE:
        return Metadata("", b"EOF", b"")
    match = _OPENMETRICS_META.fullmatch(line)
    if match is None:
        raise _invalid("OpenMetrics allows only HELP, TYPE, UNIT and EOF comments", line)
    return _metadata(line, match[1], match[2], match[3], OPENMETRICS_TYPES)


def _metadata(line: bytes, kind: bytes, raw_name: bytes, text: bytes, types: frozenset[bytes]) -> Metadata:
    try:
        family = unescape(raw_name[1:-1].decode("utf-8")) if raw_name.startswith(b'"') else raw_name.decode()
        if kind == b"HELP":
            text.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("invalid UTF-8", line) from None
    if kind == b"TYPE" and text not in types:
        raise _invalid(f"invalid metric type {text.decode(errors='replace')!r}", line)
    # OpenMetrics: a unit is the end of its family's name, after an underscore (as Prometheus checks).
    if kind == b"UNIT" and text and not family.endswith("_" + text.decode(errors="replace")):
        raise _invalid(f"unit {text.decode(errors='replace')!r} is not a suffix of metric {family!r}", line)
    return Metadata(family, kind, text)


def split_openmetrics_tail(tail: bytes) -> tuple[bytes, bytes | None]:
    """Value and timestamp (seconds, may be fractional) after an OpenMetrics series; single spaces only."""
    match = _OPENMETRICS_TAIL.fullmatch(tail)
    if match is None:
        raise _invalid("expected ' value' and an optional ' timestamp' after the series", tail)
    _check_range(match[1])
    if match[2] is not None:
        _check_range(match[2])
    return match[1], match[2]


def check_exemplar(exemplar: bytes) -> None:
    """Raise unless `exemplar` is ` # {labels} value[ timestamp]` as OpenMetrics writes it."""
    match = _EXEMPLAR.fullmatch(exemplar)
    if match is None:
        raise _invalid("malformed exemplar", exemplar)
    if match[1] is not None:
        _check_range(match[1])


def metadata_line(metadata: Metadata, *, utf8_names: bool) -> bytes | None:
    """A text-format HELP/TYPE line in the form strict parsers take; None if the name cannot be written.

    Prometheus reads `# TYPE "name" gauge` and unknown escapes in HELP; client_golang's parser does not:
    the name goes unquoted when it can, and HELP text is re-escaped (`\\` and `\n` only).
    """
    if LEGACY_METRIC_NAME.fullmatch(metadata.family):
        name = metadata.family
    elif utf8_names:
        name = f'"{escape_label_value(metadata.family)}"'
    else:
        return None
    text = metadata.text
    if metadata.kind == b"HELP":
        unescaped = _HELP_UNESCAPE.sub(lambda match: _HELP_UNESCAPES[match[0]], text.decode("utf-8"))
        text = unescaped.replace("\\", "\\\\").replace("\n", "\\n").encode()
    return b"# " + metadata.kind + b" " + name.encode() + b" " + text


def belongs_to_family(name: str, family: str, metric_type: bytes) -> bool:
    """Whether a sample called `name` is part of `family` of this type (TYPE/HELP apply to it)."""
    if name == family:
        return True
    if not name.startswith(family):
        return False
    return name[len(family) :] in FAMILY_SUFFIXES.get(metric_type, ())


def unescape(text: str) -> str:
    """Undo the escapes of a quoted label value or name: `\\\\`, `\\"` and `\\n`; others stay as they are."""
    if "\\" not in text:
        return text
    return _UNESCAPE.sub(lambda match: _UNESCAPES[match[0]], text)


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def serialize_series(labels: dict[str, str]) -> bytes:
    """`name{a="b",...}` in the canonical form: labels in the dict's order, no blanks, no empty values.

    Names must be legacy-valid (the caller drops series whose names are not).
    """
    name = labels["__name__"]
    pairs = ",".join(
        f'{label}="{escape_label_value(value)}"'
        for label, value in labels.items()
        if label != "__name__" and value
    )
    return f"{name}{{{pairs}}}".encode() if pairs else name.encode()


def serialize_utf8_series(labels: dict[str, str]) -> bytes:
    """The series with names outside the classic syntax quoted, as Prometheus 3 writes them.

    `{"my.metric","a.b"="x"}` when the metric name needs quotes, `name{"a.b"="x"}` when only labels do.
    """
    name = labels["__name__"]
    pairs = [
        f'{_utf8_label_name(label)}="{escape_label_value(value)}"'
        for label, value in labels.items()
        if label != "__name__" and value
    ]
    if LEGACY_METRIC_NAME.fullmatch(name):
        return f"{name}{{{','.join(pairs)}}}".encode() if pairs else name.encode()
    return ("{" + ",".join([f'"{escape_label_value(name)}"', *pairs]) + "}").encode()


def _utf8_label_name(label: str) -> str:
    return label if LEGACY_LABEL_NAME.fullmatch(label) else f'"{escape_label_value(label)}"'


def legacy_names(labels: dict[str, str]) -> bool:
    """Whether the metric name and every label name fit the classic (non-UTF-8) name syntax."""
    return LEGACY_METRIC_NAME.fullmatch(labels["__name__"]) is not None and all(
        LEGACY_LABEL_NAME.fullmatch(label) for label in labels if label != "__name__"
    )


def _invalid(problem: str, text: bytes) -> InvalidExpositionError:
    # The scraper gets the problem; the offending text, being the upstream's, goes to the log only.
    shown = text[:120].decode("utf-8", errors="backslashreplace")
    return InvalidExpositionError(
        f"invalid exposition: {problem}", f"invalid exposition: {problem} in {shown!r}"
    )
