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

from relay.errors import InvalidExpositionError, LimitExceededError, ScrapeError

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


class InvalidLineError(InvalidExpositionError):
    """A line the text format (or OpenMetrics) refuses, before the engine that read it says where it was.

    Made by invalid_line(), which sets the attributes: the constructor stays ScrapeError's, so that code
    which copies an error with `type(error)(message, detail)` still can. located() turns it into a plain
    InvalidExpositionError, which no engine locates again.
    """

    problem = ""  # what is wrong, without the text
    part = b""  # the refused text: the line, or the piece of it that is wrong


class LineLimitError(LimitExceededError):
    """A line over line_length_limit, or a series over a label limit, before the engine says where it was."""

    problem = ""
    line_limit = 0
    """The line_length_limit that the line passed (0 for a label limit): the excerpt stops there, so that it
    is the same however much of the line was read when it was found too long."""


LINE_ERRORS = (InvalidLineError, LineLimitError)
"""The errors about one line: the engines give them the line's place in the body (located())."""
EXCERPT_CHARS = 80
"""Characters of an offending line that an error shows; the rest is cut (…): one log field, a short page."""
EXCERPT_SOURCE = 1024
"""Bytes of the offending line that the engines hand to located(): enough for EXCERPT_CHARS characters."""
PARSE_CAUSE = "the upstream sent a line that Prometheus would refuse too"
PARSE_ACTION = (
    "fix the exporter; on_invalid_line: drop skips invalid sample lines (counted as "
    'metrics_relay_samples_dropped_total{reason="invalid_line"}) instead of failing the scrape'
)
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "'": "\\'"}
_FAMILY = re.compile(
    rb"[ \t]*(?:(?P<meta>#[ \t]+(?:HELP|TYPE|UNIT)[ \t]+)|(?P<brace>\{[ \t]*))?"
    rb'(?:(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)|"(?P<quoted>(?:\\.|[^\\"\n])*)")'
)


def invalid_line(problem: str, part: bytes) -> InvalidLineError:
    """The error for an invalid line (or piece of one, `part`); located() adds the place in the body."""
    shown = part[:120].decode("utf-8", errors="backslashreplace")
    error = InvalidLineError(
        f"invalid exposition: {problem}",
        f"invalid exposition: {problem} in {shown!r}",
        cause=PARSE_CAUSE,
        action=PARSE_ACTION,
    )
    error.problem, error.part = problem, part
    return error


def line_limit_error(problem: str, *, cause: str, action: str) -> LineLimitError:
    """The error for a line over a limit; located() adds the place in the body."""
    error = LineLimitError(problem, cause=cause, action=action)
    error.problem = problem
    return error


def located(
    error: InvalidLineError | LineLimitError, line_number: int, offset: int, text: bytes
) -> ScrapeError:
    """`error` saying where it is: the line's 1-based number and the byte offset of its start in the body,
    the family, and an excerpt of `text`, the line's first EXCERPT_SOURCE bytes or fewer (for a sample
    that a raw newline continues, the lines it spans: it is reported at its first line).

    `invalid exposition at line 7 (byte 311), family http_requests_total: <what is wrong> in '<excerpt>'`.
    """
    line_limit = error.line_limit if isinstance(error, LineLimitError) else 0
    if line_limit:  # the same text however much of the line was read when it was found too long
        text = text[:line_limit]
    where = f"line {line_number} (byte {offset})"
    family = family_of(text)
    if family:
        where += f", family {family}"
    problem = error.problem or error.message
    if isinstance(error, LineLimitError):
        return LimitExceededError(
            f"limit exceeded at {where}: {problem} in {excerpt(text, cut=line_limit > 0)}",
            cause=error.cause,
            action=error.action,
        )
    message = f"invalid exposition at {where}: {problem} in {excerpt(text)}"
    # The log also gets the refused piece, which a cut excerpt of a long line may not show.
    detail = f"{message}; refused: {excerpt(error.part)}" if error.part and error.part != text else ""
    return InvalidExpositionError(message, detail, cause=error.cause, action=error.action)


def excerpt(text: bytes, *, cut: bool = False) -> str:
    """Upstream text for a message: quoted, at most EXCERPT_CHARS characters (then …, as when `cut`, the
    text being the start of a longer one), invalid UTF-8 and other unprintable characters escaped (`\\x00`,
    `\\n`), so that it stays one readable line."""
    decoded = text.decode("utf-8", errors="surrogateescape")
    shown = "".join(_escaped(char) for char in decoded[:EXCERPT_CHARS])
    return f"'{shown}…'" if cut or len(decoded) > EXCERPT_CHARS else f"'{shown}'"


def family_of(text: bytes) -> str:
    """The metric name a line (or its start) gives: a sample's, or the one a HELP/TYPE/UNIT line names.

    A classic name as it is (cut at EXCERPT_CHARS), a quoted one as excerpt() shows it; '' for none.
    """
    match = _FAMILY.match(text)
    if match is None:
        return ""
    if match["name"] is not None:
        if match["brace"] is not None:
            return ""  # `{a="x"}`: a label, and no metric name
        name = match["name"].decode("ascii")
        return name if len(name) <= EXCERPT_CHARS else name[:EXCERPT_CHARS] + "…"
    if match["brace"] is not None:
        # `{"my.metric",…}` names the metric; `{"a.b"="x"}` is a label.
        if text[match.end() :].lstrip(b" \t")[:1] not in (b",", b"}"):
            return ""
    elif match["meta"] is None:
        return ""
    return excerpt(match["quoted"])


def _escaped(char: str) -> str:
    if char.isprintable() and char != "'":
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is no UTF-8, as surrogateescape decoded it
        return f"\\x{code - 0xDC00:02x}"
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class LineBlocks:
    """Cuts a body's chunks into blocks of whole lines, carrying a partial last line to the next chunk; knows
    where in the body each block starts, for errors that say where a line is (located())."""

    def __init__(self, line_length_limit: int) -> None:
        self._limit = line_length_limit
        # The unfinished line, in pieces: joining only once it ends keeps a long line linear in time.
        self._carry: list[bytes] = []
        self._carry_length = 0
        self._carry_line = 1  # the carry's place in the body: its line number and byte offset
        self._carry_offset = 0
        self.last_block = b""
        """The bytes of the lines last returned, newlines between them (callers may send it as it is)."""
        self.first_line = 1
        """The line number of the first line last returned."""
        self.first_offset = 0
        """The byte offset in the body of the first line last returned."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The whole lines completed by `chunk` (without their newlines); raise if one is over the limit."""
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._carry.append(chunk)
            self._carry_length += len(chunk)
            if self._limit and self._carry_length > self._limit:
                raise self._too_long(self._carry_line, self._carry_offset, b"".join(self._carry))
            return []
        if self._carry:
            self._carry.append(chunk[:cut])
            data = b"".join(self._carry)
        else:
            data = chunk[:cut]
        rest = chunk[cut + 1 :]
        self._carry = [rest] if rest else []
        self._carry_length = len(rest)
        lines = data.split(b"\n")
        self.first_line, self.first_offset = self._carry_line, self._carry_offset
        self._carry_line += len(lines)
        self._carry_offset += len(data) + 1
        if self._limit and len(data) > self._limit:  # no line of a block is longer than the block
            for index, line in enumerate(lines):
                if len(line) > self._limit:
                    raise self._too_long(self.first_line + index, self.offset_of(lines, index), line)
        if self._limit and len(rest) > self._limit:
            raise self._too_long(self._carry_line, self._carry_offset, rest)
        self.last_block = data
        return lines

    def push_back(self, text: bytes) -> None:
        """Lines of a sample that goes on past this block (a raw newline in a quoted value), as they came:
        read them again with the next chunk."""
        self._carry.insert(0, text + b"\n")
        self._carry_length += len(text) + 1
        self._carry_line -= text.count(b"\n") + 1
        self._carry_offset -= len(text) + 1

    def finish(self) -> list[bytes]:
        """The last line when the body did not end in a newline (Prometheus accepts that)."""
        last = b"".join(self._carry)
        self._carry, self._carry_length = [], 0
        self.first_line, self.first_offset = self._carry_line, self._carry_offset
        self.last_block = last
        return [last] if last else []

    def offset_of(self, lines: list[bytes], index: int) -> int:
        """The byte offset in the body of `lines[index]`, of the lines last returned."""
        return self.first_offset + sum(len(line) + 1 for line in lines[:index])

    def _too_long(self, line_number: int, offset: int, line: bytes) -> ScrapeError:
        return located(line_too_long(self._limit), line_number, offset, line[:EXCERPT_SOURCE])


def line_too_long(limit: int) -> LineLimitError:
    """The error for a line longer than line_length_limit."""
    error = line_limit_error(
        f"the line is longer than line_length_limit ({limit} bytes)",
        cause="the upstream sent a line longer than line_length_limit, which bounds the relay's memory",
        action="raise line_length_limit for this upstream if its lines are that long (0: no limit)",
    )
    error.line_limit = limit
    return error


def label_limit_error(violation: str) -> LineLimitError:
    """The error for a series over label_limit, label_name_length_limit or label_value_length_limit."""
    return line_limit_error(
        violation,
        cause="a series breaks this upstream's label limits (Prometheus fails such a scrape too)",
        action="raise the limit, or drop or shorten such labels with metric_relabel_configs",
    )


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
            raise invalid_line("invalid UTF-8", series) from None
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
        raise invalid_line("invalid UTF-8", series) from None
    bare = _BARE_SERIES.fullmatch(series)
    if bare is None and not _BRACED_SERIES.fullmatch(series):
        raise invalid_line("expected a metric name or '{'", series)
    has_braces = bare is None or bare[2] is not None
    body = text[text.index("{") + 1 : text.rindex("}")] if has_braces else ""
    name = bare[1].decode("ascii") if bare is not None else None
    name, labels, dropped_empty = _parse_label_body(body, name, series)
    if not name:
        raise invalid_line("metric name not set", series)
    return ParsedSeries(name, {"__name__": name, **labels}, dropped_empty, canonical=False)


def _parse_label_body(body: str, name: str | None, series: bytes) -> tuple[str | None, dict[str, str], bool]:
    """The pairs between the braces; a quoted string alone is the metric name."""
    labels: dict[str, str] = {}
    dropped_empty = False
    position = 0
    while body[position:].strip(" \t"):
        item = _LABEL_ITEM.match(body, position)
        if item is None or item.end() == position:
            raise invalid_line("expected a label name", series)
        bare_name, quoted_name, equals, value, comma = item.groups()
        position = item.end()
        if equals is None:
            # A quoted string alone is the metric name, when a comma or the closing brace follows it.
            if quoted_name is None or not (comma or position == len(body)):
                raise invalid_line("expected '=' after a label name", series)
            if name is not None:
                raise invalid_line("metric name already set", series)
            name = unescape(quoted_name)
            continue
        if value is None:
            raise invalid_line("expected a quoted label value", series)
        label = bare_name if bare_name is not None else unescape(quoted_name)
        if not label or label == "__name__" or label in labels:
            raise invalid_line(f"label name {label!r} is empty, reserved or repeated", series)
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
    return invalid_line(
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
        raise invalid_line("expected a value and an optional timestamp after the series", tail)
    value, timestamp = match[1], match[2]
    _check_range(value)
    # Length first: int() of a huge digit string is slow, and refused past 4300 digits.
    if timestamp is not None and (len(timestamp) > 19 or int(timestamp) > _INT64_MAX):
        raise invalid_line("timestamp out of range", timestamp)
    return value, timestamp


def parse_metadata(line: bytes) -> Metadata | None:
    """A HELP or TYPE line as Metadata; None for any other comment. Raises for an invalid one."""
    match = _META.fullmatch(line)
    if match is None:
        if re.match(rb"#[ \t]+(HELP|TYPE)[ \t]", line):
            raise invalid_line("expected a metric name after HELP or TYPE", line)
        return None
    rest = match[3]
    # The text starts one character after the name (promlex's {C}*), unless only blanks follow it.
    return _metadata(line, match[1], match[2], b"" if not rest.strip(b" \t") else rest[1:], METRIC_TYPES)


def _check_range(value: bytes) -> None:
    """Go's ParseFloat refuses a finite number too large for a float64 (Python would make it inf)."""
    lowered = value.lower()
    if b"inf" not in lowered and b"nan" not in lowered and float(value) in (float("inf"), float("-inf")):
        raise invalid_line("value out of range", value)


def parse_openmetrics_metadata(line: bytes) -> Metadata:
    """An OpenMetrics `# HELP/TYPE/UNIT name text` or `# EOF` line; any other comment is invalid there."""
    if line == EOF_LINE:
        return Metadata("", b"EOF", b"")
    match = _OPENMETRICS_META.fullmatch(line)
    if match is None:
        raise invalid_line("OpenMetrics allows only HELP, TYPE, UNIT and EOF comments", line)
    return _metadata(line, match[1], match[2], match[3], OPENMETRICS_TYPES)


def _metadata(line: bytes, kind: bytes, raw_name: bytes, text: bytes, types: frozenset[bytes]) -> Metadata:
    try:
        family = unescape(raw_name[1:-1].decode("utf-8")) if raw_name.startswith(b'"') else raw_name.decode()
        if kind == b"HELP":
            text.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_line("invalid UTF-8", line) from None
    if kind == b"TYPE" and text not in types:
        raise invalid_line(f"invalid metric type {text.decode(errors='replace')!r}", line)
    # OpenMetrics: a unit is the end of its family's name, after an underscore (as Prometheus checks).
    if kind == b"UNIT" and text and not family.endswith("_" + text.decode(errors="replace")):
        raise invalid_line(
            f"unit {text.decode(errors='replace')!r} is not a suffix of metric {family!r}", line
        )
    return Metadata(family, kind, text)


def split_openmetrics_tail(tail: bytes) -> tuple[bytes, bytes | None]:
    """Value and timestamp (seconds, may be fractional) after an OpenMetrics series; single spaces only."""
    match = _OPENMETRICS_TAIL.fullmatch(tail)
    if match is None:
        raise invalid_line("expected ' value' and an optional ' timestamp' after the series", tail)
    _check_range(match[1])
    if match[2] is not None:
        _check_range(match[2])
    return match[1], match[2]


def check_exemplar(exemplar: bytes) -> None:
    """Raise unless `exemplar` is ` # {labels} value[ timestamp]` as OpenMetrics writes it."""
    match = _EXEMPLAR.fullmatch(exemplar)
    if match is None:
        raise invalid_line("malformed exemplar", exemplar)
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
