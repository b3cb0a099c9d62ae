"""The text format reader: what Prometheus' parser accepts is accepted, what it refuses is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import InvalidExpositionError, LimitExceededError
from relay.exposition import (
    EXCERPT_CHARS,
    LineBlocks,
    belongs_to_family,
    escape_label_value,
    excerpt,
    family_of,
    parse_metadata,
    parse_series,
    serialize_series,
    split_tail,
    unescape,
)

# Series texts Prometheus' parser reads, with the label set it stores (whitespace, trailing commas, quotes).
GOOD_SERIES = [
    ('go_gc_duration_seconds{quantile="0"}', {"quantile": "0"}),
    ('go_gc_duration_seconds{quantile="0.25",}', {"quantile": "0.25"}),
    ('go_gc_duration_seconds{quantile="0.8", a="b"}', {"quantile": "0.8", "a": "b"}),
    ('go_gc_duration_seconds{ quantile="0.9", a="b"}', {"quantile": "0.9", "a": "b"}),
    ('go_gc_duration_seconds{ quantile="1.0", a="b" }', {"quantile": "1.0", "a": "b"}),
    ('go_gc_duration_seconds { quantile="1.0", a="b" }', {"quantile": "1.0", "a": "b"}),
    ('go_gc_duration_seconds { quantile= "1.0", a= "b", }', {"quantile": "1.0", "a": "b"}),
    ('go_gc_duration_seconds { quantile = "1.0", a = "b" }', {"quantile": "1.0", "a": "b"}),
    ('go_gc_duration_seconds { quantile = "2.0" a = "b" }', {"quantile": "2.0", "a": "b"}),  # no comma
    ("go_gc_duration_seconds_count", {}),
    ('some:aggregate:rate5m{a_b="c"}', {"a_b": "c"}),
    ("_metric_starting_with_underscore", {}),
    ('testmetric{_label_starting_with_underscore="foo"}', {"_label_starting_with_underscore": "foo"}),
    ('testmetric{label="\\"bar\\""}', {"label": '"bar"'}),
    ('testmetric{label="a\\\\b\\nc"}', {"label": "a\\b\nc"}),
    ('testmetric{label="a\\tb"}', {"label": "a\\tb"}),  # unknown escapes stay as written
    ("testmetric{}", {}),
    ("testmetric{ }", {}),
]


@pytest.mark.parametrize(("text", "labels"), GOOD_SERIES, ids=[text for text, _ in GOOD_SERIES])
def test_series_prometheus_accepts(text, labels):
    """Each series form Prometheus' text parser accepts gives the label set Prometheus stores."""
    name, parsed, dropped_empty, _ = parse_series(text.encode())
    assert parsed == {"__name__": name, **labels}
    assert not dropped_empty


def test_quoted_utf8_names():
    """Prometheus 3's quoted metric and label names are read from inside the braces."""
    name, labels, _, canonical = parse_series(b'{"go.gc_duration_seconds",quantile="0.5","a.b"="x"}')
    assert not canonical
    assert name == "go.gc_duration_seconds"
    assert labels == {"__name__": name, "quantile": "0.5", "a.b": "x"}
    assert parse_series(b'{"my.metric",}')[0] == "my.metric"


def test_empty_label_values_are_dropped_and_reported():
    """`a=""` is no label at all in Prometheus; the parser says one was dropped."""
    assert parse_series(b'm{a="",b="1"}') == ("m", {"__name__": "m", "b": "1"}, True, True)
    assert parse_series(b'm{ a="",b="1"}') == ("m", {"__name__": "m", "b": "1"}, True, False)


# Inputs Prometheus' parser refuses (model/textparse promparse_test.go's error cases, and more).
BAD_SERIES = [
    (b"a{b='c'}", "expected a quoted label value"),
    (b"a{b=", "expected a metric name"),
    (b'a{\xff="foo"}', "invalid UTF-8"),
    (b'a{b="\xff"}', "invalid UTF-8"),
    (b'{"a", "b = "c"}', "expected"),
    (b'{"a",b\\nc="d"}', "expected"),
    (b'something_weird{problem="}', "expected"),
    (b'empty_label_name{=""}', "expected a label name"),
    (b'{a="ok"}', "metric name not set"),
    (b'{"a","b"}', "metric name already set"),
    (b'm{"a" "b"="c"}', "expected '=' after a label name"),
    (b'm{a="1",,b="2"}', "expected a label name"),
    (b'm{a="1",a="2"}', "repeated"),
    (b'm{__name__="n"}', "reserved"),
    (b'm{""="v"}', "empty"),
    (b"m-n", "expected a metric name"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_SERIES, ids=[repr(text) for text, _ in BAD_SERIES])
def test_series_prometheus_refuses(text, problem):
    """Each series Prometheus refuses raises an error naming the problem."""
    with pytest.raises(InvalidExpositionError, match=problem):
        parse_series(text)


GOOD_TAILS = [
    (b" 1", b"1", None),
    (b" 4.9351e-05", b"4.9351e-05", None),
    (b"\t1", b"1", None),
    (b"1", b"1", None),  # after a closing brace no blank is needed
    (b" 33  \t123123", b"33", b"123123"),
    (b" +Inf", b"+Inf", None),
    (b" -inf", b"-inf", None),
    (b" NaN", b"NaN", None),
    (b" nan", b"nan", None),
    (b" Infinity", b"Infinity", None),
    (b" .5", b".5", None),
    (b" 5.", b"5.", None),
    (b" -1E+05 ", b"-1E+05", None),
    (b" 1e-400", b"1e-400", None),  # underflow is no error in Go
    (b" 1 9223372036854775807", b"1", b"9223372036854775807"),
]


@pytest.mark.parametrize(("tail", "value", "timestamp"), GOOD_TAILS, ids=[repr(t) for t, _, _ in GOOD_TAILS])
def test_values_and_timestamps_prometheus_accepts(tail, value, timestamp):
    """Values pass through as written; timestamps are whole milliseconds."""
    assert split_tail(tail) == (value, timestamp)


BAD_TAILS = [
    b" true",
    b" 1_2",
    b" 0x1p-3",
    b" 0x1P-3",
    b" 0x10",
    b" 0 1_2",
    b" 1 2 3",
    b" 1 -5",
    b" 1 1.5",
    b" +nan",
    b" infinit",
    b" 1e400",
    b" 1 9223372036854775808",
    b"",
    b" ",
    b" 1\r",
]


@pytest.mark.parametrize("tail", BAD_TAILS, ids=[repr(t) for t in BAD_TAILS])
def test_values_prometheus_refuses(tail):
    """Values Go's ParseFloat or Prometheus refuse (underscores, hex, overflow, CR) are errors."""
    with pytest.raises(InvalidExpositionError):
        split_tail(tail)


def test_metadata_lines():
    """HELP and TYPE are read as Prometheus reads them; other comments are not metadata."""
    help_line = parse_metadata(b"# HELP go_goroutines Number of goroutines\\nthat exist.")
    assert help_line is not None
    assert (help_line.family, help_line.kind) == ("go_goroutines", b"HELP")
    type_line = parse_metadata(b"# \tTYPE go_gc_duration_seconds summary")
    assert type_line is not None
    assert (type_line.family, type_line.text) == ("go_gc_duration_seconds", b"summary")
    assert parse_metadata(b"# HELP nohelp1") is not None
    assert parse_metadata(b'# TYPE "my.metric" gauge') == parse_metadata(b'# TYPE "my.metric" gauge')
    for comment in (b"#", b"# Hrandom comment starting with prefix of HELP", b"#HELP x y", b"# HELP"):
        assert parse_metadata(comment) is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"# TYPE #", "expected a metric name"),
        (b"# HELP #", "expected a metric name"),
        (b"# TYPE m gauges", "invalid metric type"),
        (b"# TYPE m gauge ", "invalid metric type"),
        (b"# TYPE m", "invalid metric type"),
        (b"# HELP m \xff", "invalid UTF-8"),
    ],
)
def test_bad_metadata(line, problem):
    """Malformed HELP/TYPE lines fail like they do in Prometheus."""
    with pytest.raises(InvalidExpositionError, match=problem):
        parse_metadata(line)


def test_family_membership_follows_the_type():
    """Histogram and summary suffixes, and _total for counters, belong to their family."""
    assert belongs_to_family("h_bucket", "h", b"histogram")
    assert belongs_to_family("h_count", "h", b"summary")
    assert belongs_to_family("c_total", "c", b"counter")
    assert belongs_to_family("g", "g", b"gauge")
    assert not belongs_to_family("g_bucket", "g", b"gauge")
    assert not belongs_to_family("hx_bucket", "h", b"histogram")


def test_line_blocks_carry_partial_lines_and_accept_a_missing_final_newline():
    """Lines split across chunks are joined; the last line needs no newline."""
    blocks = LineBlocks(line_length_limit=100)
    assert blocks.feed(b"a 1\nb") == [b"a 1"]
    assert blocks.feed(b" 2") == []
    assert blocks.feed(b"\nc 3\n\nd 4") == [b"b 2", b"c 3", b""]
    assert blocks.finish() == [b"d 4"]
    assert blocks.finish() == []


def test_line_blocks_know_where_their_lines_start():
    """Each block's first line number and byte offset follow the body, past carried and pushed-back lines."""
    blocks = LineBlocks(line_length_limit=0)
    assert blocks.feed(b"a 1\nb") == [b"a 1"]
    assert (blocks.first_line, blocks.first_offset) == (1, 0)
    lines = blocks.feed(b' 2\nc{d="x\ny"} 3\ne')
    assert lines == [b"b 2", b'c{d="x', b'y"} 3']
    assert (blocks.first_line, blocks.first_offset) == (2, 4)
    assert blocks.offset_of(lines, 2) == 15
    blocks.push_back(b"\n".join(lines[1:]))  # a sample that goes on: read again with the next chunk
    assert blocks.feed(b" 4\n") == [b'c{d="x', b'y"} 3', b"e 4"]
    assert (blocks.first_line, blocks.first_offset) == (3, 8)
    assert blocks.finish() == []


TOO_LONG = "the line is longer than line_length_limit (10 bytes)"


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([b"ok\n" + b"x" * 11 + b"\n"], f"line 2 (byte 3), family xxxxxxxxxx: {TOO_LONG} in 'xxxxxxxxxx…'"),
        ([b"ok\n", b"x" * 6, b"x" * 5], f"line 2 (byte 3), family xxxxxxxxxx: {TOO_LONG} in 'xxxxxxxxxx…'"),
        ([b"ok\n{a=" + b"x" * 11 + b"\nok\n"], f"line 2 (byte 3): {TOO_LONG} in '{{a=xxxxxxx…'"),
        ([b"ok\nok\n" + b"y" * 20], f"line 3 (byte 6), family yyyyyyyyyy: {TOO_LONG} in 'yyyyyyyyyy…'"),
    ],
)
def test_line_length_limit(chunks, message):
    """A line longer than the limit fails, whether complete or still arriving, named where it starts and
    shown up to the limit (however much of it had arrived)."""
    blocks = LineBlocks(line_length_limit=10)
    for chunk in chunks[:-1]:
        blocks.feed(chunk)
    with pytest.raises(LimitExceededError) as caught:
        blocks.feed(chunks[-1])
    assert caught.value.message == f"limit exceeded at {message}"
    assert LineBlocks(line_length_limit=0).feed(b"x" * 100_000 + b"\n") == [b"x" * 100_000]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (b'a{b="c"} 1', "'a{b=\"c\"} 1'"),
        (b"\x00\x1b\x7f", "'\\x00\\x1b\\x7f'"),
        (b"tab\tnew\nline\r", "'tab\\tnew\\nline\\r'"),
        (b"\xff\xc3(", "'\\xff\\xc3('"),
        ("é ü \u200b".encode(), "'é ü \\u200b'"),
        (b"it's", "'it\\'s'"),
        (rb'a{b="\"x\\"}', "'" + r'a{b="\"x\\"}' + "'"),  # the text format's own escapes stay as they are
        (b"y" * 81, "'" + "y" * 80 + "…'"),
        ("é".encode() * 100, "'" + "é" * 80 + "…'"),
    ],
)
def test_excerpts_are_short_escaped_and_one_line(text, shown):
    """An excerpt is quoted, cut after 80 characters, and escapes invalid UTF-8 and unprintable characters."""
    assert excerpt(text) == shown
    assert "\n" not in excerpt(text)
    assert len(excerpt(text)) <= EXCERPT_CHARS * 6 + 3


@pytest.mark.parametrize(
    ("line", "family"),
    [
        (b'apiserver_request_total{code="200"} 1', "apiserver_request_total"),
        (b"  up 1", "up"),
        (b"# HELP up Whether the target is up.", "up"),
        (b"# TYPE\tup gauge", "up"),
        (b'# TYPE "my.metric" gauge', "'my.metric'"),
        (b'{"my.metric","a"="b"} 1', "'my.metric'"),
        (b'{ "my.metric" } 1', "'my.metric'"),
        (b'{"a.b"="x"} 1', ""),
        (b'{a="x"} 1', ""),
        (b"# a comment", ""),
        (b"1_000", ""),
        (b"", ""),
        (b"n" * 200, "n" * 80 + "…"),
    ],
)
def test_the_family_of_a_line(line, family):
    """A sample's metric name or the name a HELP/TYPE line gives, quoted only when it is no classic name."""
    assert family_of(line) == family


@given(st.text())
def test_escaping_round_trips(value):
    """Escaping a label value and reading it back gives the value again."""
    assert unescape(escape_label_value(value)) == value


@given(
    st.dictionaries(
        st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True).filter(lambda n: n != "__name__"),
        st.text(min_size=1, max_size=20),
        max_size=5,
    ),
    st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True),
)
def test_serialized_series_parse_back(labels, name):
    """The canonical text of any label set parses back to the same label set."""
    full = {"__name__": name, **labels}
    assert parse_series(serialize_series(full))[1] == full
