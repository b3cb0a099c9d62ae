"""The Prometheus text format 0.0.4 as bytes: whole lines from chunks, series syntax, escaping (pure).

The grammar is Prometheus' own (model/textparse/promlex.l): blank lines and `#` comments are allowed,
whitespace may surround every token, a label set may end in a comma (and its pairs may even lack commas),
metric and label names may be quoted UTF-8 strings inside the braces (`{"my.metric", "a.b"="x"}`), values
are Go floats without `_`, `p` or hexadecimal, timestamps are int64 milliseconds. Values and timestamps
are never converted: they pass through as the bytes they arrived as.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.errors import InvalidExpositionError, LimitExceededError

LEGACY_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LEGACY_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_TYPES = frozenset({b"counter", b"gauge", b"histogram", b"summary", b"untyped"})
# The samples a family of each type may hold, by suffix of the family name (model/textparse's
# isSeriesPartOfFamily); every type also holds the bare family name.
FAMILY_SUFFIXES: dict[bytes, tuple[str, ...]] = {
    b"counter": ("_total",),
    b"histogram": ("_bucket", "_sum", "_count"),
    b"summary": ("_sum", "_count"),
}

_QUOTED = r'"((?:\\.|[^\\"])*)"'
_LABEL_ITEM = re.compile(
    rf"[ \t]*(?:([a-zA-Z_][a-zA-Z0-9_]*)|{_QUOTED})[ \t]*(?:(=)[ \t]*(?:{_QUOTED})?)?[ \t]*(,?)[ \t]*"
)
_BARE_SERIES = re.compile(rb"[ \t]*([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*(?:\{(.*)\})?[ \t]*", re.DOTALL)
_BRACED_SERIES = re.compile(rb"[ \t]*\{(.*)\}[ \t]*", re.DOTALL)
_GO_FLOAT = (
    rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    rb"|[+-]?(?:[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)|[nN][aA][nN]"
)
_TAIL = re.compile(rb"[ \t]*(" + _GO_FLOAT + rb")(?:[ \t]+([0-9]+))?[ \t]*")
_META = re.compile(rb"#[ \t]+(HELP|TYPE)[ \t]+([a-zA-Z_:][a-zA-Z0-9_:]*|\"(?:\\.|[^\\\"])*\")(.*)", re.DOTALL)
_INT64_MAX = (1 << 63) - 1
_UNESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_UNESCAPE = re.compile(r'\\[\\"n]')


@dataclass(frozen=True, slots=True)
class Metadata:
    """A `# HELP` or `# TYPE` line: the family it names, and for TYPE the type."""

    family: str
    kind: bytes  # b"HELP" or b"TYPE"
    text: bytes


class LineBlocks:
    """Cuts a body's chunks into blocks of whole lines, carrying a partial last line to the next chunk."""

    def __init__(self, line_length_limit: int) -> None:
        self._limit = line_length_limit
        self._carry = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The whole lines completed by `chunk` (without their newlines); raise if one is over the limit."""
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._carry = data
            self._check(len(data))
            return []
        self._carry = data[cut + 1 :]
        self._check(len(self._carry))
        lines = data[:cut].split(b"\n")
        if self._limit:
            self._check(max(map(len, lines)))
        return lines

    def finish(self) -> list[bytes]:
        """The last line when the body did not end in a newline (Prometheus accepts that)."""
        last, self._carry = self._carry, b""
        return [last] if last else []

    def _check(self, length: int) -> None:
        if self._limit and length > self._limit:
            raise LimitExceededError(
                f"a line of the upstream body exceeds line_length_limit ({self._limit} bytes)"
            )


def parse_series(series: bytes) -> tuple[str, dict[str, str], bool]:
    """Name, labels and whether an empty label value was dropped, from `name{a="b",...}` text.

    The name is also in the labels as `__name__`. Raises InvalidExpositionError naming the problem.
    """
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
    return name, {"__name__": name, **labels}, dropped_empty


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


def split_tail(tail: bytes) -> tuple[bytes, bytes | None]:
    """Value and timestamp tokens from what follows a series; raise InvalidExpositionError if invalid."""
    match = _TAIL.fullmatch(tail)
    if match is None:
        raise _invalid("expected a value and an optional timestamp after the series", tail)
    value, timestamp = match[1], match[2]
    lowered = value.lower()
    if b"inf" not in lowered and b"nan" not in lowered and float(value) in (float("inf"), float("-inf")):
        raise _invalid("value out of range", value)
    if timestamp is not None and int(timestamp) > _INT64_MAX:
        raise _invalid("timestamp out of range", timestamp)
    return value, timestamp


def parse_metadata(line: bytes) -> Metadata | None:
    """A HELP or TYPE line as Metadata; None for any other comment. Raises for an invalid one."""
    match = _META.fullmatch(line)
    if match is None:
        if re.match(rb"#[ \t]+(HELP|TYPE)[ \t]", line):
            raise _invalid("expected a metric name after HELP or TYPE", line)
        return None
    kind, raw_name, rest = match[1], match[2], match[3]
    text = b"" if not rest.strip(b" \t") else rest[1:]
    try:
        family = unescape(raw_name[1:-1].decode("utf-8")) if raw_name.startswith(b'"') else raw_name.decode()
        if kind == b"HELP":
            text.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("invalid UTF-8", line) from None
    if kind == b"TYPE" and text not in METRIC_TYPES:
        raise _invalid(f"invalid metric type {text.decode(errors='replace')!r}", line)
    return Metadata(family, kind, text)


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


def legacy_names(labels: dict[str, str]) -> bool:
    """Whether the metric name and every label name fit the classic (non-UTF-8) name syntax."""
    return LEGACY_METRIC_NAME.fullmatch(labels["__name__"]) is not None and all(
        LEGACY_LABEL_NAME.fullmatch(label) for label in labels if label != "__name__"
    )


def _invalid(problem: str, text: bytes) -> InvalidExpositionError:
    shown = text[:120].decode("utf-8", errors="backslashreplace")
    return InvalidExpositionError(f"invalid exposition: {problem} in {shown!r}")
