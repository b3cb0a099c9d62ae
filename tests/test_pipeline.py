"""Bodies through parse → relabel → serialize: metadata placement, limits, duplicates, bad lines, memo."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config import parse
from relay.errors import InvalidExpositionError, LimitExceededError, ScrapeError
from relay.exposition import parse_series, serialize_series, split_tail
from relay.pipeline import BodyRelabeler, body_relabeler
from relay.rules import Rules
from tests.support import require_fixtures

pytestmark = pytest.mark.usefixtures("engine")


def rules(rules_yaml: str = "", **settings_: object) -> Rules:
    """Rules for one upstream with `rules_yaml` as its metric_relabel_configs and extra settings."""
    extra = "".join(f"    {key}: {value}\n" for key, value in settings_.items())
    relabel = rules_yaml or "      []"
    text = f"upstreams:\n  - name: u\n    url: http://h/\n{extra}    metric_relabel_configs:\n{relabel}\n"
    return Rules.for_upstream(parse(text, source="t.yml", base_dir=Path()).upstreams[0])


def relay(
    body: bytes, relay_rules: Rules | None = None, chunk: int = 0, **options: bool
) -> tuple[bytes, BodyRelabeler]:
    """Run `body` through a fresh BodyRelabeler, fed whole or in chunks of `chunk` bytes."""
    relabeler = body_relabeler(relay_rules or rules(), **options)
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    out = b"".join(relabeler.feed(piece) for piece in pieces) + relabeler.finish()
    return out, relabeler


DROP_B = "      - source_labels: [__name__]\n        regex: b.*\n        action: drop\n"


def test_metadata_comes_with_the_first_surviving_sample_and_goes_with_the_last():
    """A family whose samples are all dropped loses its HELP/TYPE; the others keep theirs once."""
    body = (
        b"# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
        b"# HELP b B.\n# TYPE b gauge\nb 2\n"
        b'# TYPE c histogram\nc_bucket{le="+Inf"} 1\nc_sum 1\nc_count 1\n'
    )
    out, relabeler = relay(body, rules(DROP_B))
    assert out == (
        b"# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
        b'# TYPE c histogram\nc_bucket{le="+Inf"} 1\nc_sum 1\nc_count 1\n'
    )
    assert (relabeler.samples_in, relabeler.samples_out, relabeler.dropped["relabel"]) == (5, 4, 1)


def test_metadata_waits_for_a_sample_that_survives():
    """When the first samples of a family are dropped, HELP/TYPE move down to the first one kept."""
    text = "      - source_labels: [x]\n        regex: drop\n        action: drop\n"
    out, _ = relay(b'# TYPE g gauge\ng{x="drop"} 1\ng{x="keep"} 2\n', rules(text))
    assert out == b'# TYPE g gauge\ng{x="keep"} 2\n'


def test_a_second_type_line_for_a_name_is_never_sent():
    """An upstream that repeats a family sends its metadata once."""
    out, _ = relay(b'# TYPE g gauge\ng 1\n# TYPE h gauge\nh 1\n# TYPE g gauge\ng{a="b"} 2\n')
    assert out.count(b"# TYPE g gauge") == 1
    assert out.endswith(b'g{a="b"} 2\n')


def test_renamed_series_never_precede_their_new_family_type():
    """A series renamed into a later family makes that family's TYPE go: no TYPE after its samples."""
    rename = (
        "      - source_labels: [__name__]\n        regex: old\n        target_label: __name__\n"
        "        replacement: new\n"
    )
    out, _ = relay(b'# TYPE old gauge\nold 1\n# TYPE new gauge\nnew{a="b"} 2\n', rules(rename))
    assert out == b'new 1\nnew{a="b"} 2\n'


def test_comments_blank_lines_and_blanks_are_normalised():
    """Comments and blank lines go, leading blanks and odd spacing become the canonical form."""
    body = b'# just a comment\n\n  m{a="1" , b="2",}\t 3   \t1700000000000\nn 4\r\n'
    with pytest.raises(InvalidExpositionError):
        relay(body)
    out, _ = relay(body.replace(b"\r", b""))
    assert out == b'm{a="1",b="2"} 3 1700000000000\nn 4\n'


def test_values_pass_through_as_written():
    """Values and timestamps are never reformatted: 1e3 stays 1e3, NaN stays NaN."""
    body = b"a 1e3\nb NaN\nc -Inf 17\nd 0.000000000000000000001\n"
    assert relay(body)[0] == body


def test_empty_label_values_stay_as_they_came_unless_a_rule_rewrites_the_series():
    """An empty label value is valid text (Prometheus reads it as no label): an unchanged line keeps it,
    a rewritten series is written without it."""
    assert relay(b'm{a="",b="x"} 1\n')[0] == b'm{a="",b="x"} 1\n'
    add = "      - target_label: c\n        replacement: y\n"
    assert relay(b'm{a="",b="x"} 1\n', rules(add))[0] == b'm{b="x",c="y"} 1\n'


def test_missing_final_newline_is_accepted():
    """The last line may end without a newline."""
    assert relay(b"a 1\nb 2")[0] == b"a 1\nb 2\n"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_chunk_boundaries_do_not_matter(chunk):
    """Cutting the body anywhere gives the same output as feeding it whole."""
    body = b'# HELP m M.\n# TYPE m gauge\nm{a="x\\"}"} 1\nm{a="y"} 2 3\n# c\nn 5'
    assert relay(body, chunk=chunk)[0] == relay(body)[0]


def test_name_removed_by_relabeling_is_dropped_and_counted():
    """A series whose __name__ a rule deletes is dropped (not the scrape) with reason invalid_name."""
    text = (
        "      - source_labels: [a]\n        regex: x\n        target_label: __name__\n"
        "        replacement: ''\n"
    )
    out, relabeler = relay(b'm{a="x"} 1\nm{a="y"} 2\n', rules(text))
    assert out == b'm{a="y"} 2\n'
    assert relabeler.dropped["invalid_name"] == 1


def test_duplicates_made_by_relabeling_keep_the_first():
    """When a labeldrop merges two series, the first sample is kept and the second counted."""
    text = "      - regex: instance\n        action: labeldrop\n"
    out, relabeler = relay(b'm{instance="a"} 1\nm{instance="b"} 2\nm{instance="c",x="1"} 3\n', rules(text))
    assert out == b'm 1\nm{x="1"} 3\n'
    assert relabeler.dropped["duplicate"] == 1


@pytest.mark.parametrize(
    ("settings_", "body", "message"),
    [
        ({"sample_limit": 2}, b"a 1\nb 1\nc 1\n", "sample_limit"),
        ({"label_limit": 2}, b'a{x="1",y="2"} 1\n', "label_limit"),
        ({"label_name_length_limit": 3}, b'a{long="1"} 1\n', "label_name_length_limit"),
        ({"label_value_length_limit": 3}, b'a{x="long"} 1\n', "label_value_length_limit"),
        ({"line_length_limit": "10B"}, b'a{x="long"} 1\n', "line_length_limit"),
    ],
)
def test_limits_fail_the_scrape(settings_, body, message):
    """Exceeding one of Prometheus' limits fails the scrape with a message naming the limit."""
    with pytest.raises(LimitExceededError, match=message):
        relay(body, rules(**settings_))


def test_limits_apply_after_relabeling():
    """As in Prometheus, label limits count the labels a series has after metric relabeling."""
    text = "      - regex: y\n        action: labeldrop\n"
    assert relay(b'a{x="1",y="2"} 1\n', rules(text, label_limit=2))[0] == b'a{x="1"} 1\n'


def test_sample_limit_counts_samples_kept():
    """Dropped samples do not count towards sample_limit."""
    assert relay(b"a 1\nb 1\nc 1\n", rules(DROP_B, sample_limit=2))[0] == b"a 1\nc 1\n"


@pytest.mark.parametrize(
    "line", [b"a 1_000", b"a", b"a{b='c'} 1", b'a{b="\xff"} 1', b"a 1 2 3", b"# TYPE a gauges"]
)
def test_invalid_lines_fail_the_scrape_by_default_and_can_be_dropped(line):
    """An invalid line fails the scrape; with on_invalid_line: drop it is skipped and counted."""
    body = b"ok 1\n" + line + b"\nfine 2\n"
    with pytest.raises(InvalidExpositionError):
        relay(body)
    if line.startswith(b"#"):
        return  # metadata stays strict: a broken TYPE line says nothing about which samples to trust
    out, relabeler = relay(body, rules(on_invalid_line="drop"))
    assert out == b"ok 1\nfine 2\n"
    assert relabeler.dropped["invalid_line"] == 1


def test_memo_is_bounded_and_survives_scrapes():
    """The memo is shared by the scrapes of one upstream and never holds more than relabel_cache_size."""
    shared = rules(relabel_cache_size=10)
    body = b"".join(b'm{i="%d"} 1\n' % i for i in range(25))
    first, _ = relay(body, shared)
    assert shared.memo_entries <= 10
    second, _ = relay(body, shared)
    assert first == second == body


def peak_memory_relaying(lines: int, relay_rules: Rules) -> int:
    """Peak bytes allocated while relaying a body of `lines` distinct series in 64 KiB chunks."""
    body = b"".join(b'series_total{pod="pod-%d",le="%d"} %d\n' % (i, i % 10, i) for i in range(lines))
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    del body
    relabeler = body_relabeler(relay_rules)
    tracemalloc.start()
    try:
        for chunk in chunks:
            relabeler.feed(chunk)
        relabeler.finish()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_body():
    """Four times the body costs no more memory: the memo is bounded and nothing keeps the body."""
    keep = "      - source_labels: [le]\n        regex: '[0-4]'\n        action: keep\n"
    small = peak_memory_relaying(5_000, rules(keep, relabel_cache_size=500))
    large = peak_memory_relaying(20_000, rules(keep, relabel_cache_size=500))
    assert large < small * 1.5


# --- the memoised path against an obviously correct reference --------------------------------------

RULE_SETS = [
    "",
    DROP_B,
    "      - target_label: cluster\n        replacement: one\n",
    "      - regex: (a)\n        replacement: copy_$1\n        action: labelmap\n",
    "      - source_labels: [a]\n        regex: (.)(.*)\n        target_label: a\n"
    "        replacement: ${2}x$1\n",
    "      - regex: a\n        action: labeldrop\n",
    "      - source_labels: [__name__, a]\n        regex: 'b;.*'\n        action: keep\n",
    "      - source_labels: [a]\n        modulus: 3\n        target_label: shard\n        action: hashmod\n",
    "      - source_labels: [a]\n        target_label: a\n        action: uppercase\n",
]


def reference(body: bytes, relay_rules: Rules) -> list[bytes]:
    """Line by line, no memo, no shortcuts: parse, relabel, drop what has no name, drop repeats."""
    out, seen = [], set()
    for line in body.split(b"\n"):
        if not line:
            continue
        end = line.rfind(b"}") if b"{" in line else line.find(b" ") - 1
        parsed = parse_series(line[: end + 1])
        labels = parsed.labels
        value, _ = split_tail(line[end + 1 :])
        result = relay_rules.program.apply(labels)
        if result is None or not result.get("__name__"):
            continue
        if result == labels:
            result = labels  # an unchanged series keeps its label order
        key = frozenset(result.items())
        if key in seen:
            continue
        seen.add(key)
        # An unchanged series in canonical form goes out as it came (empty values too).
        unchanged = result == labels and parsed.canonical
        out.append(b"%s %s" % (line[: end + 1] if unchanged else serialize_series(result), value))
    return out


label_values = st.sampled_from(["", "x", "xy", "Z9", 'q"uote', "back\\slash", "new\nline", "é"])


def escaped(value: str) -> bytes:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").encode()


# Distinct series (name, a, b), so that any repeat in the output is one that relabeling made.
sample_lines = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "bb", "c_total"]),
        label_values,
        label_values,
        st.sampled_from(["0", "1.5", "NaN", "-Inf", "1e3"]),
    ),
    max_size=30,
    unique_by=lambda sample: sample[:3],
).map(
    lambda samples: [
        b'%s{a="%s",b="%s"} %s' % (name.encode(), escaped(a), escaped(b), value.encode())
        for name, a, b, value in samples
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(RULE_SETS), sample_lines, st.integers(1, 40))
def test_memoised_path_matches_the_reference(rule_set, lines, chunk):
    """For random bodies, rules and chunkings, the output equals the reference path's, warm or cold."""
    relay_rules = rules(rule_set)
    body = b"\n".join(lines) + b"\n"
    expected = reference(body, relay_rules)
    for _ in range(2):  # cold memo, then warm
        out, _ = relay(body, relay_rules, chunk=chunk)
        assert [line for line in out.split(b"\n") if line] == expected


def test_a_rename_into_a_later_counter_family_keeps_the_body_strict():
    """Renaming `a` to `a_total` before family a_total's TYPE drops that TYPE rather than repeat it late."""
    rename = (
        "      - source_labels: [__name__]\n        regex: a\n        target_label: __name__\n"
        "        replacement: a_total\n"
    )
    body = b'# TYPE a counter\na 1\n# TYPE a_total counter\na_total{x="1"} 2\n'
    out, _ = relay(body, rules(rename))
    assert out == b'# TYPE a counter\na_total 1\na_total{x="1"} 2\n'


def test_metadata_is_rewritten_in_the_form_strict_parsers_take():
    """Quoted classic names lose their quotes; HELP escapes Prometheus tolerates are written properly."""
    body = b'# HELP "m" a\\q \\\\ b\\nc\n# TYPE "m" gauge\nm 1\n'
    assert relay(body)[0] == b"# HELP m a\\\\q \\\\ b\\nc\n# TYPE m gauge\nm 1\n"


def test_label_length_limits_count_bytes():
    """As in Prometheus, a three-letter value of two-byte letters is six bytes long."""
    with pytest.raises(LimitExceededError, match="label_value_length_limit"):
        relay('m{b="ééé"} 1\n'.encode(), rules(label_value_length_limit=5))


def test_openmetrics_hash_inside_a_label_value_is_no_exemplar():
    """` # ` inside a quoted label value does not start an exemplar."""
    body = b'a_total{b="x # y"} 1 # {t="1"} 2\na_total{b="z"} 3\n# EOF\n'
    assert relay(body, openmetrics=True)[0] == body


def test_a_full_memo_keeps_its_series_and_is_renewed_when_they_move_on():
    """A body bigger than the memo still hits for the series it holds; a body of new series renews it."""
    shared = rules(relabel_cache_size=100)
    first = b"".join(b'm{i="%d"} 1\n' % i for i in range(300))
    relay(first, shared)
    assert shared.memo_entries == 100
    for _ in range(2):
        _, again = relay(first, shared)
        assert again.memo_misses == 200  # the same 100 remembered series hit each time
    moved_on = b"".join(b'm{i="%d"} 1\n' % i for i in range(1000, 1300))
    relay(moved_on, shared)
    assert shared.memo_entries == 0  # full before, and none of it used: forgotten
    relay(moved_on, shared)
    assert shared.memo_entries == 100


def test_metadata_pending_from_the_previous_chunk_is_not_lost_to_the_verbatim_shortcut():
    """A TYPE read in one chunk and sent in the next, beside a dropped comment, comes out right."""
    relabeler = body_relabeler(rules())
    out = relabeler.feed(b"x 1\n# TYPE a gauge\n") + relabeler.feed(b"# just a comment\na 1\n")
    assert out + relabeler.finish() == b"x 1\n# TYPE a gauge\na 1\n"


@given(
    st.lists(
        st.sampled_from(
            [
                b"# TYPE a gauge",
                b"# HELP b B.",
                b"# c",
                b"a 1",
                b'a{x="1"} 2',
                b"",
                b"  b 3",
                b"b 4",
                b'b{x="q\\"q"} 5',
            ]
        )
    ),
    st.integers(2, 40),
)
def test_verbatim_blocks_equal_byte_by_byte_output(lines, chunk):
    """However a body is cut, the block shortcut gives what one-byte chunks (one line a block) give."""
    body = b"\n".join(lines) + b"\n"
    assert relay(body, chunk=chunk)[0] == relay(body)[0] == relay(body, chunk=1)[0]


def test_a_family_with_two_type_lines_gets_one():
    """Two TYPE (or HELP) lines for one family upstream give one downstream, the last, as Prometheus keeps."""
    body = b"# HELP a A.\n# TYPE a counter\n# HELP a Again.\n# TYPE a gauge\na 1\n"
    assert relay(body)[0] == b"# HELP a Again.\n# TYPE a gauge\na 1\n"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"a 1 NaN", "expected ' value' and an optional ' timestamp'"),
        (b"a 1 +Inf", "expected ' value' and an optional ' timestamp'"),
        (b"a 1 1e400", "out of range"),
        (b'a_total 1 # {t="1"} 2 Inf', "malformed exemplar"),
        (b'a_total 1 # {t="1"} 2 1e999', "out of range"),
    ],
)
def test_openmetrics_refuses_timestamps_that_are_no_time(line, problem):
    """OpenMetrics timestamps (of samples and exemplars) must be finite numbers, as Prometheus requires."""
    with pytest.raises(InvalidExpositionError, match=problem):
        relay(b"# TYPE a counter\n" + line + b"\n# EOF\n", openmetrics=True)


def test_openmetrics_unit_must_end_the_family_name():
    """`# UNIT` names the end of its family's name (after `_`); anything else is refused (as Prometheus)."""
    good = b"# TYPE a_seconds gauge\n# UNIT a_seconds seconds\na_seconds 1\n# EOF\n"
    assert relay(good, openmetrics=True)[0] == good
    for family, unit in ((b"a", b"seconds"), (b"aseconds", b"seconds")):
        body = b"# UNIT %s %s\n%s 1\n# EOF\n" % (family, unit, family)
        with pytest.raises(InvalidExpositionError, match="is not a suffix of metric"):
            relay(body, openmetrics=True)


@pytest.mark.parametrize("name", [b"a", b"a_count", b'{"a.b"'])
def test_openmetrics_exemplars_only_on_total_and_bucket_samples(name):
    """An exemplar on a sample other than a counter's _total or a histogram's _bucket is refused."""
    series = name + (b"}" if name.startswith(b"{") else b"")
    with pytest.raises(InvalidExpositionError, match="exemplars are allowed only on _total and _bucket"):
        relay(series + b' 1 # {t="1"} 2\n# EOF\n', openmetrics=True)
    kept = b'a_total 1 # {t="1"} 2\nb_bucket{le="1"} 1 # {t="2"} 0.5\n# EOF\n'
    assert relay(kept, openmetrics=True)[0] == kept


@pytest.mark.parametrize(
    "series",
    [
        b'a_total{b="c",}',
        b'a_total{b="c" ,d="e"}',
        b'a_total{ b="c"}',
        b'a_total {b="c"}',
        b'a_total{b="c"\t}',
    ],
)
def test_openmetrics_refuses_the_text_formats_looser_label_sets(series):
    """Blanks in a label set, a trailing or leading comma: the text format takes them, OpenMetrics does not,
    even when the same upstream's text body taught the memo the series first; `drop` drops the line."""
    shared = rules()
    text_body = series + b" 1\n"
    assert relay(text_body, shared)[1].samples_out == 1
    openmetrics_body = b"# TYPE a counter\n" + series + b" 1\na_total 2\n# EOF\n"
    with pytest.raises(InvalidExpositionError, match="OpenMetrics label sets"):
        relay(openmetrics_body, shared, openmetrics=True)
    out, relabeler = relay(openmetrics_body, rules(on_invalid_line="drop"), openmetrics=True)
    assert out == b"# TYPE a counter\na_total 2\n# EOF\n"
    assert relabeler.dropped["invalid_line"] == 1


@pytest.mark.parametrize("chunk", [0, 1, 2, 5, 9, 64])
def test_a_raw_newline_inside_a_quoted_label_value_continues_the_sample(chunk):
    """Prometheus' lexer takes a raw newline inside a quoted label value: the sample is read whole, however
    the body is cut, and written with the newline escaped; a comment's quote continues nothing."""
    body = b'# HELP a "quoted\n# TYPE a gauge\na{b="x\ny",c="}"} 1\nd 2\na{b="p\nq\nr"} 3\n'
    out, relabeler = relay(body, chunk=chunk)
    assert out == b'# HELP a "quoted\n# TYPE a gauge\na{b="x\\ny",c="}"} 1\nd 2\na{b="p\\nq\\nr"} 3\n'
    assert (relabeler.samples_in, relabeler.samples_out) == (3, 3)


def test_a_quoted_value_left_open_fails_or_is_dropped():
    """A body that ends inside a quoted value is invalid (dropped as one line with `drop`); a sample that
    goes on past line_length_limit fails the scrape; OpenMetrics takes no raw newline at all."""
    with pytest.raises(InvalidExpositionError):
        relay(b'a 1\nb{c="open\nstill open')
    out, relabeler = relay(b'a 1\nb{c="open\nstill open\n', rules(on_invalid_line="drop"))
    assert out == b"a 1\n"
    assert relabeler.dropped["invalid_line"] == 1
    with pytest.raises(LimitExceededError, match="line_length_limit"):
        relay(b'b{c="' + b"x\n" * 40 + b'"} 1\n', rules(line_length_limit=50))
    with pytest.raises(InvalidExpositionError):
        relay(b'a_total{b="x\ny"} 1\n# EOF\n', openmetrics=True)


# --- where a failure is: line, byte, family and an excerpt ---------------------------------------------

TAIL_PROBLEM = "expected a value and an optional timestamp after the series"
LONG_LINE = b'big{x="' + b"y" * 100_000 + b'"} 1_000'


@pytest.mark.parametrize(
    ("body", "settings_", "message"),
    [
        (
            b'# TYPE a counter\na_total 1\napiserver_request_total{code="200"} 1_000\n',
            {},
            "invalid exposition at line 3 (byte 27), family apiserver_request_total: "
            f"{TAIL_PROBLEM} in 'apiserver_request_total{{code=\"200\"}} 1_000'",
        ),
        (
            b'a{x="1\n2"} 1\nb 1_000\n',
            {},
            f"invalid exposition at line 3 (byte 13), family b: {TAIL_PROBLEM} in 'b 1_000'",
        ),
        (
            b'ok 1\nb{x="1\n2"} 1_000\n',
            {},
            f"invalid exposition at line 2 (byte 5), family b: {TAIL_PROBLEM} in 'b{{x=\"1\\n2\"}} 1_000'",
        ),
        (
            b"ok 1\n" + LONG_LINE + b"\n",
            {},
            f"invalid exposition at line 2 (byte 5), family big: {TAIL_PROBLEM} in 'big{{x=\"{'y' * 73}…'",
        ),
        (
            b'ok 1\na{x="\x00\x1b\t"} 1 2 3\n',
            {},
            f"invalid exposition at line 2 (byte 5), family a: {TAIL_PROBLEM} "
            "in 'a{x=\"\\x00\\x1b\\t\"} 1 2 3'",
        ),
        (
            b'ok 1\na{x="\xff\xfe"} 1\n',
            {},
            "invalid exposition at line 2 (byte 5), family a: invalid UTF-8 in 'a{x=\"\\xff\\xfe\"} 1'",
        ),
        (
            b"ok 1\n# TYPE b bogus\n",
            {},
            "invalid exposition at line 2 (byte 5), family b: invalid metric type 'bogus' "
            "in '# TYPE b bogus'",
        ),
        (
            b'ok 1\n{a="x"} 1\n',
            {},
            "invalid exposition at line 2 (byte 5): metric name not set in '{a=\"x\"} 1'",
        ),
        (
            b"ok 1\n  b 1_0",  # a last line without newline, after blanks
            {},
            f"invalid exposition at line 2 (byte 5), family b: {TAIL_PROBLEM} in '  b 1_0'",
        ),
        (
            b'bad 1_0\nok 1\nc{x="\xff"} 1\nd{x="1\n2"} 1 2 3\n# TYPE e bogus\n',
            {"on_invalid_line": "drop"},  # three lines dropped, and counted in the line numbers
            "invalid exposition at line 6 (byte 41), family e: invalid metric type 'bogus' "
            "in '# TYPE e bogus'",
        ),
        (
            b"ok 1\n" + b'b{x="' + b"y" * 30 + b'"} 1\n',
            {"line_length_limit": "20B"},
            "limit exceeded at line 2 (byte 5), family b: the line is longer than line_length_limit "
            "(20 bytes) in 'b{x=\"yyyyyyyyyyyyyyy…'",
        ),
        (
            b"ok 1\n" + LONG_LINE,
            {"line_length_limit": "1KiB", "on_invalid_line": "drop"},
            "limit exceeded at line 2 (byte 5), family big: the line is longer than line_length_limit "
            f"(1024 bytes) in 'big{{x=\"{'y' * 73}…'",
        ),
        (
            b'ok 1\nm{a="1",b="2"} 1\n',
            {"label_limit": 2},
            "limit exceeded at line 2 (byte 5), family m: a series has 3 labels, more than label_limit (2) "
            'in \'m{a="1",b="2"} 1\'',
        ),
    ],
)
@pytest.mark.parametrize("chunk", [0, 1, 3, 7, 4096])
def test_a_failure_names_line_byte_family_and_an_excerpt(body, settings_, message, chunk):
    """A line that fails the scrape is named by its line number, the byte offset of its start, its family
    and a short escaped excerpt, the same however the body is cut into chunks."""
    with pytest.raises(ScrapeError) as caught:
        relay(body, rules(**settings_), chunk=chunk)
    assert caught.value.message == message
    assert caught.value.cause  # what the 502 body and the log explain besides
    assert caught.value.action


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"a 1\n# EOF\nb 2\n",
            "invalid exposition at line 3 (byte 10), family b: content after # EOF in 'b 2'",
        ),
        (
            b"# TYPE a counter\na_total 1\n\n# EOF\n",
            "invalid exposition at line 3 (byte 27): blank lines and leading blanks are not OpenMetrics "
            "in ''",
        ),
        (
            b'# TYPE a gauge\na 1 # {t="1"} 2\n# EOF\n',
            "invalid exposition at line 2 (byte 15), family a: exemplars are allowed only on _total and "
            "_bucket samples in 'a 1 # {t=\"1\"} 2'",
        ),
    ],
)
@pytest.mark.parametrize("chunk", [0, 1, 5])
def test_an_openmetrics_failure_names_where_it_is(body, message, chunk):
    """OpenMetrics' own refusals (after # EOF, blank lines, misplaced exemplars) say where they are too."""
    with pytest.raises(InvalidExpositionError) as caught:
        relay(body, chunk=chunk, openmetrics=True)
    assert caught.value.message == message


def test_the_refused_piece_of_a_long_line_goes_to_the_log():
    """The excerpt of a long line stops after 80 characters; the detail adds the piece that is wrong."""
    with pytest.raises(InvalidExpositionError) as caught:
        relay(b"ok 1\n" + LONG_LINE + b"\n")
    assert len(caught.value.message) < 300
    assert caught.value.detail == caught.value.message + "; refused: ' 1_000'"


def test_body_level_failures_name_no_line():
    """sample_limit and a missing # EOF are about the whole body: their messages stay as they were."""
    with pytest.raises(LimitExceededError) as caught:
        relay(b"a 1\nb 1\nc 1\n", rules(sample_limit=2))
    assert caught.value.message == "more samples than sample_limit (2)"
    with pytest.raises(InvalidExpositionError) as missing:
        relay(b"a 1\n", openmetrics=True)
    assert missing.value.message == "invalid exposition: the OpenMetrics body ended without # EOF"


@pytest.mark.fixtures
@pytest.mark.parametrize("chunk", [0, 65536, 777])
def test_an_invalid_line_deep_in_a_real_body_is_found_where_it_is(chunk):
    """In the real kube-apiserver capture, the value of a sample two thirds of the way in spoiled: the failure
    names the line, its byte offset and its family as counted independently from the body."""
    body = (require_fixtures() / "kube-apiserver-1.35-minikube.prom").read_bytes()
    start = body.index(b"\n", len(body) * 2 // 3) + 1
    while body[start] == ord("#"):
        start = body.index(b"\n", start) + 1
    end = body.index(b"\n", start)
    value = body.rindex(b" ", start, end) + 1
    spoiled = body[:value] + b"1_000" + body[end:]
    line = spoiled[start : value + 5]
    family = re.match(rb"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
    assert family is not None
    with pytest.raises(InvalidExpositionError) as caught:
        relay(spoiled, chunk=chunk)
    shown = line.decode()[:80] + ("…" if len(line) > 80 else "")
    line_number = body.count(b"\n", 0, start) + 1
    assert caught.value.message == (
        f"invalid exposition at line {line_number} (byte {start}), family {family[0].decode()}: "
        f"{TAIL_PROBLEM} in '{shown}'"
    )
