"""The compiled line engine against the Python reference: same bytes, counts and errors, cold and warm.

relay/pyengine.py is the specification; relay/_engine.pyx must give, for every body, chunking, format,
limit and rule set, the same per-chunk output, the same `samples_in`, `samples_out`, `dropped` and
`memo_misses`, and the same error (class, message with its place in the body, args, detail, cause and
action) at the same call. Each engine gets Rules of its own (the memo lives in Rules), and each body is
relayed twice with them, memo cold then warm.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay import pipeline
from relay.config import UpstreamConfig, parse
from relay.errors import InvalidExpositionError, ScrapeError
from relay.exposition import opens_quote, split_openmetrics_tail, split_tail
from relay.pipeline import body_relabeler
from relay.rules import Rules
from tests.support import require_fixtures

needs_native = pytest.mark.skipif(pipeline.NATIVE is None, reason="the compiled engine is not loaded here")

# --- running a body through one engine ---------------------------------------------------------------

RULE_SETS = {
    "none": "",
    "drop-by-name": "      - source_labels: [__name__]\n        regex: 'b.*|c_total|go_.*|process_.*'\n"
    "        action: drop\n",
    "add-label": "      - target_label: cluster\n        replacement: one\n",
    "labeldrop": "      - regex: 'a|le|quantile'\n        action: labeldrop\n",
    "rename": "      - source_labels: [__name__]\n        regex: '(m|a|.*_seconds)(.*)'\n"
    "        target_label: __name__\n        replacement: 'renamed_${1}${2}'\n",
}


@functools.lru_cache(maxsize=512)
def upstream_config(rules_yaml: str, limits: tuple[tuple[str, object], ...] = ()) -> UpstreamConfig:
    """One upstream with `rules_yaml` as its metric_relabel_configs and extra settings (parsed once)."""
    extra = "".join(f"    {key}: {value}\n" for key, value in limits)
    relabel = rules_yaml or "      []\n"
    text = f"upstreams:\n  - name: u\n    url: http://h/\n{extra}    metric_relabel_configs:\n{relabel}"
    return parse(text, source="t.yml", base_dir=Path()).upstreams[0]


def fresh_rules(rule_set: str = "none", limits: tuple[tuple[str, object], ...] = ()) -> Rules:
    """New Rules (an empty memo) for the upstream, with a rule set of RULE_SETS."""
    return Rules.for_upstream(upstream_config(RULE_SETS[rule_set], limits))


@dataclass(frozen=True)
class Outcome:
    """What one engine made of one body: each call's output, the error if any, and the counts."""

    outputs: tuple[bytes, ...]
    error: tuple[type[BaseException], str, tuple[object, ...], tuple[str, ...]] | None
    samples_in: int
    samples_out: int
    dropped: dict[str, int]
    memo_misses: int
    memo_entries: int


def pieces(body: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    """`body` cut in chunks of the sizes given, in turn (the whole body at once when there are none)."""
    if not sizes:
        yield body
        return
    start, turn = 0, 0
    while start < len(body):
        size = sizes[turn % len(sizes)]
        yield body[start : start + size]
        start += size
        turn += 1


class Scrape:
    """One body through one engine, fed chunk by chunk; an error ends it and is kept."""

    def __init__(self, engine: str, rules: Rules, *, openmetrics: bool, utf8_names: bool) -> None:
        self.rules = rules
        self.relabeler = body_relabeler(rules, openmetrics=openmetrics, utf8_names=utf8_names, engine=engine)
        self.outputs: list[bytes] = []
        self.error: tuple[type[BaseException], str, tuple[object, ...], tuple[str, ...]] | None = None
        self.done = False

    def call(self, chunk: bytes | list[bytes] | None) -> None:
        """feed(chunk), feed_many(chunks) for a list, or finish() for None; nothing once the body ended."""
        if self.done:
            return
        try:
            if chunk is None:
                self.outputs.append(self.relabeler.finish())
            elif isinstance(chunk, list):
                self.outputs.append(self.relabeler.feed_many(chunk))
            else:
                self.outputs.append(self.relabeler.feed(chunk))
        except Exception as exc:  # noqa: BLE001 - whatever one engine raises, the other must raise too
            explained = (exc.detail, exc.cause, exc.action) if isinstance(exc, ScrapeError) else ()
            self.error = (type(exc), str(exc), exc.args, explained)
            self.done = True
        if chunk is None:
            self.done = True

    def outcome(self, *, with_memo: bool = True) -> Outcome:
        """The outputs, error and counts so far (memo counts left out when another body shares it)."""
        relabeler = self.relabeler
        return Outcome(
            outputs=tuple(self.outputs),
            error=self.error,
            samples_in=relabeler.samples_in,
            samples_out=relabeler.samples_out,
            dropped=dict(relabeler.dropped),
            memo_misses=relabeler.memo_misses if with_memo else -1,
            memo_entries=self.rules.memo_entries if with_memo else -1,
        )


def batched(chunks: list[bytes], batches: tuple[int, ...]) -> list[bytes | list[bytes]]:
    """The chunks as feed() calls, or grouped for feed_many() calls of the sizes given, in turn."""
    if not batches:
        return list(chunks)
    calls: list[bytes | list[bytes]] = []
    start, turn = 0, 0
    while start < len(chunks):
        size = batches[turn % len(batches)]
        calls.append(chunks[start : start + size])
        start += size
        turn += 1
    return calls


def scrape(
    engine: str,
    rules: Rules,
    body: bytes,
    sizes: tuple[int, ...] = (),
    *,
    openmetrics: bool = False,
    utf8_names: bool = False,
    batches: tuple[int, ...] = (),
) -> Outcome:
    """Relay `body` once with `rules` on `engine` (with feed_many() for batches of chunks, if given)."""
    run = Scrape(engine, rules, openmetrics=openmetrics, utf8_names=utf8_names)
    for call in batched(list(pieces(body, sizes)), batches):
        run.call(call)
    run.call(None)
    return run.outcome()


def assert_engines_agree(
    body: bytes,
    rule_set: str = "none",
    limits: tuple[tuple[str, object], ...] = (),
    sizes: tuple[int, ...] = (),
    *,
    openmetrics: bool = False,
    utf8_names: bool = False,
    warm: tuple[tuple[tuple[int, ...], bool], ...] | None = None,
    batches: tuple[int, ...] = (),
) -> list[Outcome]:
    """Both engines, each with fresh Rules, relay `body` cold, then warm (by default once more alike):
    each scrape gives the same outputs, counts and error on both. `warm`: (chunk sizes, utf8_names) each."""
    plan = [(sizes, utf8_names), *(warm if warm is not None else [(sizes, utf8_names)])]
    results: dict[str, list[Outcome]] = {}
    for engine in ("python", "native"):
        rules = fresh_rules(rule_set, limits)
        results[engine] = [
            scrape(engine, rules, body, chunking, openmetrics=openmetrics, utf8_names=utf8, batches=batches)
            for chunking, utf8 in plan
        ]
    python, native = results["python"], results["native"]
    for number, (expected, got) in enumerate(zip(python, native, strict=True)):
        memo = "cold" if number == 0 else f"warm (scrape {number + 1})"
        assert got == expected, f"{memo} memo: the engines differ"
    return python


# --- a grammar of realistic line pieces ----------------------------------------------------------------

NAMES = [b"a", b"a_total", b"a_bucket", b"b", b"bb", b"c_total", b"m", b"m_count", b"m_sum", b"go_x", b"x:y"]
QUOTED_NAMES = [b'"my.metric"', b'"a_total"', b'"m"', '"é"'.encode(), b'"q\\"n"']
LABEL_NAMES = [b"a", b"a", b"le", b"x", b"instance", b"_y", b'"a.b"', b'"x"', b"__name__", b"1bad", b"a-b"]
LABEL_VALUES = [
    b"x",
    b"x",
    b"1",
    b"",
    b"+Inf",
    b'q\\"q',
    b"back\\\\slash",
    b"new\\nline",
    b"raw\nnewline",  # Prometheus' lexer takes it: the sample goes on in the next line
    b"two\nraw\nnewlines }",
    "é".encode(),
    b"x # y",
    b"}",
    b"{",
    b"v" * 12,
    b"\\t",  # an unknown escape stays as it is
    b"bad\\",  # escapes the closing quote
    b"\xff",
]
CLEAN_LABEL_VALUES = [b"x", b"1", b"+Inf", b"0.5", b"y z", b"v" * 12]
VALUES = [
    b"1",
    b"0",
    b"-1.5e3",
    b"+Inf",
    b"-Inf",
    b"Inf",
    b"NaN",
    b"nan",
    b"inf",
    b"Infinity",
    b"1_000",
    b"0x1p3",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"1e308",
    b"1.7976931348623157e308",
    b"1.8e308",
    b".5",
    b"5.",
    b"+.5e-3",
    b"9" * 310,
    b"1e0300",
    b"000001",
    b"",
    b"x",
    b"1e",
    b"--1",
]
CLEAN_VALUES = [b"1", b"0", b"-1.5e3", b"+Inf", b"-Inf", b"NaN", b"3.25", b"1e-3", b"17"]
TIMESTAMPS = [
    b"0",
    b"1700000000000",
    b"123456789012345678",
    b"1234567890123456789",
    b"9223372036854775807",
    b"9223372036854775808",
    b"12345678901234567890",
    b"-5",
    b"1.5",
    b"1e3",
    b"NaN",
]
CLEAN_TIMESTAMPS = [b"1700000000000", b"0", b"123456789012345678"]
CLEAN_OPENMETRICS_TIMESTAMPS = [b"1700000000.5", b"0", b"1e9", b"1700000000"]
BLANKS = [b" ", b" ", b" ", b"\t", b"  ", b" \t"]
TRAILING = [b"", b"", b"", b" ", b"\t", b"\r"]
LEADING = [b"", b"", b"", b"", b" ", b"\t", b"  \t"]
EXEMPLARS = [
    b' # {t="1"} 2 3',
    b' # {t="1"} 2',
    b" # {} 1",
    b' # {t="1",u="x # y"} 2 1.5',
    b' # {t="1"} NaN',
    b" # {t=1} 2",
    b" # bad",
    b' # {t="1"}  2',
]
CLEAN_EXEMPLARS = [b' # {t="1"} 2 3', b' # {t="1"} 2', b" # {} 1", b' # {trace_id="abc",s="x # y"} 0.5 1.5']
TEXT_TYPES = [b"counter", b"gauge", b"histogram", b"summary", b"untyped"]
OPENMETRICS_TYPES = [b"counter", b"gauge", b"histogram", b"gaugehistogram", b"info", b"stateset", b"unknown"]
HELP_TEXTS = [b"Some help.", b"with \\\\ and \\n", b"", b"a\\q", "é".encode(), b"x # y", b"\xff"]
SUFFIXES = [b"", b"", b"_total", b"_bucket", b"_count", b"_sum", b"_created", b"_info"]
COMMENTS = [
    b"# just a comment",
    b"#",
    b"#HELP a x",
    b"# EOF",
    b"# EOF ",
    b"  # indented comment",
    b"#\tTYPE a gauge",
    b"#  HELP a spaced",
    b'# TYPE "my.metric" gauge',
    b"# TYPE a gauges",
    b"# HELP",
    b"# TYPE a",
]
GARBAGE = [
    b"a",
    b"{",
    b"}",
    b'a{b="c"',
    b"a 1 2 3",
    b"\xff 1",
    b"a{b='c'} 1",
    b'a{b="\xff"} 1',
    b"1 2",
    b'a{__name__="x"} 1',
    b'a{x="1",x="2"} 1',
    b"a{} 1",
    b"{} 1",
    b'{"a.b"="x"} 1',
    b'{"my.metric"} 1',
    b'a{b="c"}1',
    b'a {b="c"} 1',
    b"a\x00 1",
]


@st.composite
def sample_lines(draw: st.DrawFn, *, clean: bool, openmetrics: bool, name: bytes | None = None) -> bytes:
    """A sample line: name, labels (maybe with a quoted UTF-8 name), value, timestamp, exemplar, blanks."""
    name = name if name is not None else draw(st.sampled_from(NAMES))
    values = CLEAN_LABEL_VALUES if clean else LABEL_VALUES
    label_names = LABEL_NAMES[:6] if clean else LABEL_NAMES
    pairs = draw(st.lists(st.tuples(st.sampled_from(label_names), st.sampled_from(values)), max_size=3))
    if clean:
        pairs = list(dict(pairs).items())  # no label twice
    items = [b'%s="%s"' % pair for pair in pairs]
    quoted = None if clean else draw(st.sampled_from([None, None, None, None, *QUOTED_NAMES]))
    head = name
    if quoted is not None:
        items.insert(draw(st.integers(0, len(items))), quoted)
        head = b""
    labels = b""
    if items or draw(st.booleans()):
        separator = b"," if clean else draw(st.sampled_from([b",", b",", b", ", b" , "]))
        trailing_comma = b"" if clean else draw(st.sampled_from([b"", b"", b","]))
        labels = b"{" + separator.join(items) + trailing_comma + b"}"
    single = clean or (openmetrics and draw(st.booleans()))
    blank = b" " if single else draw(st.sampled_from(BLANKS))
    value = draw(st.sampled_from(CLEAN_VALUES if clean else VALUES))
    line = (b"" if clean else draw(st.sampled_from(LEADING))) + head + labels + blank + value
    stamps = (CLEAN_OPENMETRICS_TIMESTAMPS if openmetrics else CLEAN_TIMESTAMPS) if clean else TIMESTAMPS
    if draw(st.booleans()):
        line += (b" " if single else draw(st.sampled_from(BLANKS))) + draw(st.sampled_from(stamps))
    if not clean:
        line += draw(st.sampled_from(TRAILING))
    if openmetrics and draw(st.integers(0, 3)) == 0:
        line += draw(st.sampled_from(CLEAN_EXEMPLARS if clean else EXEMPLARS))
    return line


@st.composite
def metadata_lines(draw: st.DrawFn, *, clean: bool, openmetrics: bool, name: bytes | None = None) -> bytes:
    """A HELP, TYPE or UNIT line."""
    name = name if name is not None else draw(st.sampled_from(NAMES if clean else NAMES + QUOTED_NAMES))
    kinds = [b"HELP", b"TYPE", b"UNIT"] if openmetrics else [b"HELP", b"TYPE"]
    kind = draw(st.sampled_from(kinds if clean else [*kinds, b"UNIT"]))
    if kind == b"TYPE":
        types = OPENMETRICS_TYPES if openmetrics else TEXT_TYPES
        text = draw(st.sampled_from(types if clean else [*types, *OPENMETRICS_TYPES, b"gauges"]))
    elif kind == b"UNIT":
        text = draw(st.sampled_from([b"seconds", b"bytes", b""]))
    else:
        text = draw(st.sampled_from(HELP_TEXTS[:3] if clean else HELP_TEXTS))
    if not clean and not openmetrics and draw(st.integers(0, 4)) == 0:
        return (
            b"#" + draw(st.sampled_from(BLANKS)) + kind + draw(st.sampled_from(BLANKS)) + name + b" " + text
        )
    return b"# " + kind + b" " + name + b" " + text


@st.composite
def families(draw: st.DrawFn, *, clean: bool, openmetrics: bool) -> list[bytes]:
    """A family as exporters write it: metadata for a name, then samples of that name and its suffixes."""
    name = draw(st.sampled_from(NAMES))
    lines = draw(st.lists(metadata_lines(clean=clean, openmetrics=openmetrics, name=name), max_size=3))
    for suffix in draw(st.lists(st.sampled_from(SUFFIXES), min_size=1, max_size=4)):
        lines.append(draw(sample_lines(clean=clean, openmetrics=openmetrics, name=name + suffix)))
    return lines


@st.composite
def bodies(draw: st.DrawFn, openmetrics: bool) -> bytes:
    """A body: families, stray samples and metadata, and (unless clean) comments, blanks and bad lines."""
    clean = draw(st.booleans())
    single = [
        sample_lines(clean=clean, openmetrics=openmetrics),
        metadata_lines(clean=clean, openmetrics=openmetrics),
    ]
    if not clean:
        single += [
            st.sampled_from(COMMENTS),
            st.sampled_from([b"", b" ", b"\t"]),
            st.sampled_from(GARBAGE),
        ]
    parts = draw(
        st.lists(
            st.one_of(families(clean=clean, openmetrics=openmetrics), st.one_of(single).map(lambda x: [x])),
            max_size=6,
        )
    )
    lines = [line for part in parts for line in part]
    body = b"\n".join(lines)
    if lines and draw(st.integers(0, 5)):
        body += b"\n"
    if openmetrics or draw(st.integers(0, 5)) == 0:
        body += draw(st.sampled_from([b"# EOF\n", b"# EOF\n", b"# EOF\n", b"# EOF", b"# EOF\n\n", b""]))
    return body


LINE_LENGTH_LIMITS = ["40B", "64B"]
limit_settings = st.tuples(
    st.sampled_from([(), (("sample_limit", 3),), (("sample_limit", 1),)]),
    st.sampled_from([(), (("label_limit", 2),)]),
    st.sampled_from([(), (("label_value_length_limit", 4),), (("label_name_length_limit", 2),)]),
    st.sampled_from([(), *((("line_length_limit", limit),) for limit in LINE_LENGTH_LIMITS)]),
    st.sampled_from([(), (("on_invalid_line", "drop"),)]),
    st.sampled_from([(), (("relabel_cache_size", 2),)]),
).map(lambda groups: tuple(setting for group in groups for setting in group))
# Mostly no limit at all, so that most bodies get past them.
limits_strategy = st.one_of(st.just(()), st.just((("on_invalid_line", "drop"),)), limit_settings)
chunkings = st.one_of(st.just(()), st.lists(st.integers(1, 200), min_size=1, max_size=4).map(tuple))
# feed() a chunk at a time, or feed_many() of a few chunks at a time (as the worker thread is given them).
batchings = st.one_of(st.just(()), st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple))


@st.composite
def relay_cases(draw: st.DrawFn) -> dict[str, object]:
    """A body, its format, the scraper's UTF-8 choice, limits, a rule set and a chunking."""
    openmetrics = draw(st.booleans())
    return {
        "body": draw(bodies(openmetrics)),
        "openmetrics": openmetrics,
        "utf8_names": draw(st.booleans()),
        "limits": draw(limits_strategy),
        "rule_set": draw(st.sampled_from(list(RULE_SETS))),
        "sizes": draw(chunkings),
        "batches": draw(batchings),
    }


@needs_native
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(relay_cases())
@example(
    {
        "body": b'# HELP m M.\n# TYPE m gauge\nm{a="x\\"}"} 1\nm{a="y"} 2 3\n# c\nn 5',
        "openmetrics": False,
        "utf8_names": False,
        "limits": (),
        "rule_set": "none",
        "sizes": (3,),
    }
)
@example(
    {
        "body": b'a_total{b="x # y"} 1 # {t="1"} 2\na_total{b="z"} 3\n# EOF\n',
        "openmetrics": True,
        "utf8_names": False,
        "limits": (),
        "rule_set": "rename",
        "sizes": (),
    }
)
def test_engines_agree_on_random_bodies(case):
    """For random bodies, formats, limits, rules and chunkings, both engines give the same results."""
    assert_engines_agree(
        case["body"],
        case["rule_set"],
        case["limits"],
        case["sizes"],
        openmetrics=case["openmetrics"],
        utf8_names=case["utf8_names"],
        batches=case.get("batches", ()),
    )


@needs_native
@pytest.mark.parametrize(
    ("body", "options"),
    [
        (b'{"my.metric","a.b"="x"} 1\nm{"a.b"="y"} 2\n', {"utf8_names": True}),
        (b'{"my.metric","a.b"="x"} 1\nm{"a.b"="y"} 2\n', {"utf8_names": False}),
        (b"a 1 12345678901234567890\n", {}),
        (b"a 1e400\n", {}),
        (b"a 1_000\n", {}),
        (b"a 0x1p3\n", {}),
        (b'a_total 1 # {t="1"} 2 3\n# EOF\n', {"openmetrics": True}),
        (b"a 1\n\n# EOF\n", {"openmetrics": True}),
        (b"a 1\n", {"openmetrics": True}),
        (b'm{a="",b="x"} 1\n  m{a="1" , b="2",}\t 3   \t1700000000000\n', {}),
    ],
)
@pytest.mark.parametrize("rule_set", list(RULE_SETS))
def test_engines_agree_on_chosen_bodies(body, options, rule_set):
    """Bodies each written to reach one path (UTF-8 names, odd values, exemplars, EOF) agree, cut anyhow."""
    for sizes in [(), (1,), (2, 5), (7,)]:
        assert_engines_agree(body, rule_set, (), sizes, **options)
        assert_engines_agree(body, rule_set, (("on_invalid_line", "drop"),), sizes, **options)


# --- the real fixtures ---------------------------------------------------------------------------------

FIXTURE_RULE_SETS = ["none", "drop-by-name", "labeldrop", "rename"]


def fixture_files() -> list[str]:
    """The fixture file names (empty when the directory is missing: the test then skips or fails)."""
    from tests.support import FIXTURES  # noqa: PLC0415 - a constant, read at collection

    return sorted(path.name for path in FIXTURES.glob("*") if path.name != "SOURCES.md") or ["missing"]


@needs_native
@pytest.mark.fixtures
@pytest.mark.parametrize("rule_set", FIXTURE_RULE_SETS)
@pytest.mark.parametrize("file", fixture_files())
def test_engines_agree_on_the_fixtures(file, rule_set):
    """Every real fixture, with each rule set, cold and warm, in 64 KiB and 777-byte chunks, agrees."""
    path = require_fixtures() / file
    if not path.is_file():
        pytest.fail(f"{path} is missing")
    body = path.read_bytes()
    openmetrics = file.endswith(".om.txt")
    # Warm: odd chunks, then 64 KiB again, then (text format) for a scraper that takes UTF-8 names.
    warm = (((777,), False), ((65536,), False), *([] if openmetrics else [((65536,), True)]))
    outcomes = assert_engines_agree(body, rule_set, (), (65536,), openmetrics=openmetrics, warm=warm)
    assert outcomes[0].error is None, outcomes[0].error
    assert outcomes[0].samples_in > 0
    assert len({b"".join(outcome.outputs) for outcome in outcomes[:3]}) == 1  # memo and cuts change nothing
    if len(body) < 1 << 20:  # the big ones are cut in odd chunks when warm only: time
        assert_engines_agree(body, rule_set, (), (777,), openmetrics=openmetrics, warm=(((65536,), False),))


def test_fixture_list_covers_every_file():
    """The fixture test runs on every file of ../shared/fixtures, OpenMetrics ones included."""
    files = fixture_files()
    if files == ["missing"]:
        require_fixtures()
    assert any(name.endswith(".om.txt") for name in files)
    assert any(name.endswith(".prom") for name in files)


# --- which engine a process gets -----------------------------------------------------------------------


def test_ci_loads_the_native_engine():
    """Under CI (and extensions not disabled) the compiled engine is built, loaded and the default."""
    if not os.environ.get("CI") or os.environ.get("RELAY_NO_EXTENSIONS"):
        pytest.skip("only under CI with extensions enabled")
    assert pipeline.NATIVE is not None
    assert pipeline.default_engine == "native"
    assert pipeline.available_engines() == ("native", "python")


def default_engine_in_a_subprocess(**env: str) -> str:
    """The default engine of a new Python process with the given environment changes."""
    environment = {key: value for key, value in os.environ.items() if key != "RELAY_NO_EXTENSIONS"}
    environment.update(env)
    code = "import relay.pipeline as p; print(p.default_engine, p.NATIVE is None)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )
    return result.stdout.strip()


def test_relay_no_extensions_selects_the_python_engine():
    """RELAY_NO_EXTENSIONS=1 makes a process use the Python engine, even where the native one was built."""
    assert default_engine_in_a_subprocess(RELAY_NO_EXTENSIONS="1") == "python True"
    with pytest.raises(ValueError, match="not available"):
        body_relabeler(fresh_rules(), engine="nonesuch")


@needs_native
def test_without_the_variable_a_process_loads_the_native_engine():
    """Where the compiled engine is built, a process without RELAY_NO_EXTENSIONS defaults to it."""
    assert default_engine_in_a_subprocess() == "native False"


# --- the native memo's memory --------------------------------------------------------------------------

MEMO_SERIES = 200_000


def kube_apiserver_like_body(series: int) -> bytes:
    """`series` distinct series of about 100 bytes each, as kube-apiserver writes them."""
    template = (
        b'apiserver_request_total{code="200",group="apps",resource="pods-%d",verb="LIST",version="v1"} %d\n'
    )
    return b"".join(template % (i, i) for i in range(series))


def rss_bytes() -> int:
    """This process' resident set size, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no VmRSS in /proc/self/status")


@needs_native
@pytest.mark.parametrize(
    "rule_set",
    [
        "",  # no rules: no identities kept
        "      - regex: nonesuch\n        action: labeldrop\n",  # rewrites nothing, yet dedup is on
    ],
)
def test_native_memo_costs_at_most_128_bytes_a_series(rule_set):
    """A native memo of 200,000 ~100-byte series keeps at most 128 bytes per entry (and RSS agrees)."""
    rules = Rules.for_upstream(upstream_config(rule_set, (("relabel_cache_size", MEMO_SERIES * 2),)))
    body = kube_apiserver_like_body(MEMO_SERIES)
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    assert 90 <= len(body) / MEMO_SERIES <= 130
    del body
    relabeler = body_relabeler(rules, engine="native")
    before = rss_bytes()
    for chunk in chunks:
        relabeler.feed(chunk)
    relabeler.finish()
    growth = rss_bytes() - before
    memo = rules.native_memo
    assert memo is not None
    assert len(memo) == MEMO_SERIES  # type: ignore[arg-type]
    assert relabeler.samples_out == MEMO_SERIES
    per_entry = memo.table_bytes / len(memo)  # type: ignore[attr-defined, arg-type]
    assert per_entry <= 128, f"{per_entry:.1f} bytes per memo entry"
    assert growth / MEMO_SERIES <= 160, f"RSS grew {growth / MEMO_SERIES:.1f} bytes per series"


# --- the native helpers --------------------------------------------------------------------------------

TAIL_ALPHABET = " \t0123456789.eE+-_xpInfaNiy"
tails = st.one_of(
    st.builds(
        lambda blank, value, stamp, trailing: blank + value + stamp + trailing,
        st.sampled_from([b" ", b" ", b"\t", b"  ", b""]),
        st.sampled_from(VALUES + CLEAN_VALUES),
        st.one_of(
            st.just(b""),
            st.builds(
                lambda blank, stamp: blank + stamp,
                st.sampled_from([b" ", b" ", b"\t", b"  "]),
                st.sampled_from(TIMESTAMPS + CLEAN_OPENMETRICS_TIMESTAMPS + VALUES),
            ),
        ),
        st.sampled_from(TRAILING),
    ),
    st.text(TAIL_ALPHABET, max_size=24).map(str.encode),
    st.text(TAIL_ALPHABET, max_size=6).map(lambda text: b" " + text.encode()),
    st.builds(
        lambda digits, exponent: b" " + digits.encode() + b"e" + exponent.encode(),
        st.text("0123456789.", min_size=1, max_size=400),
        st.text("+-0123456789", min_size=1, max_size=6),
    ),
    st.binary(max_size=16),
)


def python_verdict(tail: bytes, *, openmetrics: bool) -> bool:
    """Whether the Python side takes `tail` as valid and already canonical."""
    split = split_openmetrics_tail if openmetrics else split_tail
    try:
        value, timestamp = split(tail)
    except InvalidExpositionError:
        return False
    canonical = b" " + value + (b" " + timestamp if timestamp is not None else b"")
    return canonical == tail


@needs_native
@settings(max_examples=1500, deadline=None)
@given(tails, st.booleans())
@example(b" 1", False)
@example(b" 1e400", False)
@example(b" " + b"9" * 309, False)
@example(b" 1 1234567890123456789", False)
@example(b" 1 9223372036854775808", False)
@example(b" NaN 1.5", True)
@example(b" +Inf", True)
def test_canonical_tail_only_takes_what_python_takes_as_canonical(tail, openmetrics):
    """canonical_tail() is True only for tails Python finds valid and canonical (else Python decides)."""
    from relay._engine import canonical_tail  # noqa: PLC0415 - only where it was built

    if canonical_tail(tail, openmetrics):
        assert python_verdict(tail, openmetrics=openmetrics)
        assert fresh_rules().learn_tail(tail, openmetrics=openmetrics) is True


@needs_native
@settings(max_examples=2000, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"a", b"{", b"}", b'"', b"\\", b"#", b"=", b",", b" ", b"\n", b"1"]), max_size=14
    )
)
@example([b"a", b"{", b"b", b"=", b'"', b"x"])
@example([b"a", b"{", b"b", b"=", b'"', b"x", b"\\"])
@example([b"#", b"{", b'"'])
def test_the_native_open_quote_check_is_the_reference_one(pieces):
    """The C scanner that finds a sample ending inside a quoted value agrees with the Python regex."""
    from relay._engine import opens_quote_native  # noqa: PLC0415 - only where it was built

    line = b"".join(pieces)
    assert opens_quote_native(line) == opens_quote(line)


@needs_native
def test_canonical_tail_takes_the_common_forms():
    """The fast path is taken for the usual forms, and never for ones Python refuses."""
    from relay._engine import canonical_tail  # noqa: PLC0415 - only where it was built

    for tail in [b" 1", b" 0.5", b" -1.5e3", b" +Inf", b" NaN", b" 17 1700000000000"]:
        assert canonical_tail(tail, False), tail
    for tail in [b" 1", b" 1700000000.5 1700000000.5", b" NaN 1e9"]:
        assert canonical_tail(tail, True), tail
    for tail in [b" 1e400", b" 1_000", b" 0x1p3", b"  1", b" 1 ", b"1", b"", b" 1\t2", b" 1 NaN"]:
        assert not canonical_tail(tail, False), tail
        assert not canonical_tail(tail, True), tail
    assert not canonical_tail(b" 1 12345678901234567890", False)  # past int64 milliseconds
    assert canonical_tail(b" 1 12345678901234567890", True)  # OpenMetrics' seconds are floats


MASK64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & MASK64


def _sipround(v: list[int]) -> None:
    v[0] = (v[0] + v[1]) & MASK64
    v[1] = _rotl(v[1], 13) ^ v[0]
    v[0] = _rotl(v[0], 32)
    v[2] = (v[2] + v[3]) & MASK64
    v[3] = _rotl(v[3], 16) ^ v[2]
    v[0] = (v[0] + v[3]) & MASK64
    v[3] = _rotl(v[3], 21) ^ v[0]
    v[2] = (v[2] + v[1]) & MASK64
    v[1] = _rotl(v[1], 17) ^ v[2]
    v[2] = _rotl(v[2], 32)


def reference_siphash(data: bytes, key: bytes, c: int, d: int, *, wide: bool) -> int | tuple[int, int]:
    """SipHash-c-d, 64- or 128-bit, from the paper's description (slow; for checking only)."""
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]
    if wide:
        v[1] ^= 0xEE
    whole = len(data) - len(data) % 8
    words = [int.from_bytes(data[i : i + 8], "little") for i in range(0, whole, 8)]
    words.append(((len(data) & 0xFF) << 56) | int.from_bytes(data[whole:], "little"))
    for m in words:
        v[3] ^= m
        for _ in range(c):
            _sipround(v)
        v[0] ^= m
    v[2] ^= 0xEE if wide else 0xFF
    for _ in range(d):
        _sipround(v)
    first = v[0] ^ v[1] ^ v[2] ^ v[3]
    if not wide:
        return first
    v[1] ^= 0xDD
    for _ in range(d):
        _sipround(v)
    return first, v[0] ^ v[1] ^ v[2] ^ v[3]


def as_bytes(words: tuple[int, int]) -> bytes:
    """A 128-bit SipHash result as the 16 bytes the reference implementation writes."""
    return words[0].to_bytes(8, "little") + words[1].to_bytes(8, "little")


KEY = bytes(range(16))


def test_the_reference_siphash_gives_published_vectors():
    """The checking implementation gives the published SipHash-2-4 vectors (paper, reference code)."""
    # SipHash paper, appendix A: key 00..0f, message 00..0e.
    assert reference_siphash(bytes(range(15)), KEY, 2, 4, wide=False) == 0xA129CA6149BE45E5
    # veorq/SipHash vectors.h, first 64- and 128-bit vectors: the empty message.
    assert reference_siphash(b"", KEY, 2, 4, wide=False) == 0x726FDB47DD0E0E31
    wide = reference_siphash(b"", KEY, 2, 4, wide=True)
    assert isinstance(wide, tuple)
    assert as_bytes(wide).hex() == "a3817f04ba25a8e66df67214c7550293"


@needs_native
def test_siphash13_128_gives_the_published_vector():
    """The empty message under key 00..0f hashes to the SipHash-1-3-128 vector of the siphasher crate."""
    from relay._engine import siphash13_128  # noqa: PLC0415 - only where it was built

    # jedisct1/rust-siphash, src/tests128.rs, test_siphash128_1_3.
    assert as_bytes(siphash13_128(b"", KEY)).hex() == "e77ebcb22788a5befd62db6add303001"


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_siphash13_128_is_siphash_1_3_128(data, key, other_key):
    """Deterministic, equal to the reference SipHash-1-3-128, and a different key gives another hash."""
    from relay._engine import siphash13_128  # noqa: PLC0415 - only where it was built

    hashed = siphash13_128(data, key)
    assert siphash13_128(bytes(data), bytes(key)) == hashed
    assert hashed == reference_siphash(data, key, 1, 3, wide=True)
    assert all(0 <= word <= MASK64 for word in hashed)
    if other_key != key:
        assert siphash13_128(data, other_key) != hashed
    if data:
        assert siphash13_128(data[:-1], key) != hashed


@needs_native
def test_siphash13_128_wants_a_16_byte_key():
    """A key of another length is refused."""
    from relay._engine import siphash13_128  # noqa: PLC0415 - only where it was built

    for key in [b"", bytes(15), bytes(17)]:
        with pytest.raises(ValueError, match="16 bytes"):
            siphash13_128(b"x", key)


# --- two bodies sharing one memo -----------------------------------------------------------------------


@st.composite
def shared_memo_cases(draw: st.DrawFn) -> dict[str, object]:
    """Two bodies of one upstream (in either format), limits, rules, chunkings and who finishes first."""
    first_openmetrics, second_openmetrics = draw(st.booleans()), draw(st.booleans())
    first = draw(bodies(first_openmetrics))
    second = first if draw(st.booleans()) and first_openmetrics == second_openmetrics else None
    return {
        "bodies": (first, second if second is not None else draw(bodies(second_openmetrics))),
        "openmetrics": (first_openmetrics, second_openmetrics),
        "utf8_names": (draw(st.booleans()), draw(st.booleans())),
        "limits": tuple(
            dict(draw(st.sampled_from([(), (("relabel_cache_size", 2),)])) + draw(limits_strategy)).items()
        ),
        "rule_set": draw(st.sampled_from(list(RULE_SETS))),
        "sizes": (draw(chunkings), draw(chunkings)),
        "second_finishes_first": draw(st.booleans()),
    }


def interleaved(engine: str, rules: Rules, case: dict[str, object]) -> tuple[Outcome, Outcome]:
    """Both bodies through one engine with one Rules, a chunk of each in turn."""
    runs = [
        Scrape(engine, rules, openmetrics=case["openmetrics"][i], utf8_names=case["utf8_names"][i])  # type: ignore[index]
        for i in range(2)
    ]
    streams = [list(pieces(case["bodies"][i], case["sizes"][i])) for i in range(2)]  # type: ignore[index]
    for turn in range(max(map(len, streams))):
        for run, stream in zip(runs, streams, strict=True):
            if turn < len(stream):
                run.call(stream[turn])
    order = runs[::-1] if case["second_finishes_first"] else runs
    for run in order:
        run.call(None)
    first, second = (run.outcome(with_memo=False) for run in runs)
    return first, second


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shared_memo_cases())
def test_bodies_sharing_a_memo_interleaved_give_what_each_gives_alone(case):
    """Two bodies relabeled chunk by chunk in turn with one Rules give each what it gives alone."""
    rule_set, limits = case["rule_set"], case["limits"]
    results = {}
    for engine in ("python", "native"):
        alone = tuple(
            Scrape(
                engine,
                fresh_rules(rule_set, limits),
                openmetrics=case["openmetrics"][i],
                utf8_names=case["utf8_names"][i],
            )
            for i in range(2)
        )
        for i, run in enumerate(alone):
            for chunk in pieces(case["bodies"][i], case["sizes"][i]):
                run.call(chunk)
            run.call(None)
        expected = tuple(run.outcome(with_memo=False) for run in alone)
        shared = fresh_rules(rule_set, limits)
        for scrape_round in ("cold", "warm"):
            assert interleaved(engine, shared, case) == expected, f"{engine}, {scrape_round} memo"
        results[engine] = expected
    assert results["native"] == results["python"]


def overlapping_bodies(count: int, *, openmetrics: bool) -> list[bytes]:
    """Bodies of one upstream as successive scrapes see them: families with metadata, series come and go."""
    bodies_ = []
    for number in range(count):
        lines = []
        for family in range(12):
            name = b"family_%d_seconds" % family
            lines += [b"# HELP %s Family %d." % (name, family), b"# TYPE %s histogram" % name]
            for pod in range(number * 20, number * 20 + 60):
                for le in (b"0.1", b"1", b"+Inf"):
                    lines.append(b'%s_bucket{pod="pod-%d",le="%s"} %d' % (name, pod, le, pod))
                lines.append(b'%s_sum{pod="pod-%d"} 1.5' % (name, pod))
                lines.append(b'%s_count{pod="pod-%d"} %d 1700000000000' % (name, pod, pod))
        if openmetrics:
            lines = [line.replace(b" 1700000000000", b" 1700000000.5") for line in lines] + [b"# EOF"]
        bodies_.append(b"\n".join(lines) + b"\n")
    return bodies_


@needs_native
@pytest.mark.parametrize("memo_size", [100_000, 500])
@pytest.mark.parametrize("rule_set", ["none", "labeldrop", "rename"])
def test_native_bodies_in_worker_threads_sharing_a_memo_give_what_each_gives_alone(rule_set, memo_size):
    """Bodies relabeled at once in worker threads (feed_many, GIL released) with one Rules each come out as
    alone, round after round, whether the memo holds them all or is full and renewed."""
    limits = (("relabel_cache_size", memo_size),)
    bodies_ = [*overlapping_bodies(3, openmetrics=False), *overlapping_bodies(2, openmetrics=True)[1:]]
    formats = [False, False, False, True]
    expected = [
        scrape("python", fresh_rules(rule_set, limits), body, (4096,), openmetrics=openmetrics)
        for body, openmetrics in zip(bodies_, formats, strict=True)
    ]
    shared = fresh_rules(rule_set, limits)
    barrier = threading.Barrier(len(bodies_))

    def relay_in_a_thread(index: int) -> Outcome:
        barrier.wait()
        return scrape(
            "native", shared, bodies_[index], (4096,), openmetrics=formats[index], batches=(1, 8, 3)
        )

    with ThreadPoolExecutor(max_workers=len(bodies_)) as workers:
        for _ in range(3):
            got = list(workers.map(relay_in_a_thread, range(len(bodies_))))
            for outcome, alone in zip(got, expected, strict=True):
                assert outcome.error is None, outcome.error
                assert b"".join(outcome.outputs) == b"".join(alone.outputs)
                assert (outcome.samples_in, outcome.samples_out, outcome.dropped) == (
                    alone.samples_in,
                    alone.samples_out,
                    alone.dropped,
                )


# --- the memo's bounds ---------------------------------------------------------------------------------


def relayed_by_each(body: bytes, rule_set: str, scrapes: int = 2) -> dict[str, list[Outcome]]:
    """Each engine's outcomes for `body` scraped `scrapes` times on one fresh Rules each."""
    outcomes = {}
    for engine in ("python", "native"):
        rules = fresh_rules(rule_set, ())
        outcomes[engine] = [
            scrape(engine, rules, body, (65536,), openmetrics=False, utf8_names=False, batches=())
            for _ in range(scrapes)
        ]
    return outcomes


def without_memo(outcome: Outcome) -> Outcome:
    """The outcome but for the memo's own counts, which follow each engine's memory bounds."""
    return dataclasses.replace(outcome, memo_misses=0, memo_entries=0)


@needs_native
def test_a_memo_bounded_by_bytes_stops_growing_and_changes_no_output(monkeypatch):
    """Past MEMO_BYTE_LIMIT neither memo grows, and the bodies, counts and errors stay those of the reference.

    The Python memo counts the series text against the bound; the native one stores no text (16-byte keys)
    and counts the rewritten text it keeps. The bound is scaled down from 64 MiB in both modules that read
    it, with a rule that rewrites every series, so that both memos reach it in milliseconds.
    """
    import relay._engine  # noqa: PLC0415 - only where it was built
    import relay.rules  # noqa: PLC0415 - the module whose constant is scaled down

    monkeypatch.setattr(relay.rules, "MEMO_BYTE_LIMIT", 4096)
    monkeypatch.setattr(relay._engine, "MEMO_BYTE_LIMIT", 4096)
    body = b"".join(b'm{pod="pod-%03d",node="node-%s"} 1\n' % (i, b"x" * 40) for i in range(100))
    outcomes = relayed_by_each(body, "add-label", scrapes=3)
    python, native = outcomes["python"], outcomes["native"]
    assert [without_memo(one) for one in native] == [without_memo(one) for one in python]
    assert python[0].memo_entries < 100
    assert native[0].memo_entries < 100
    assert native[-1].memo_entries == native[0].memo_entries  # full: it keeps what it has


@needs_native
def test_a_body_of_more_names_than_the_native_name_table_changes_no_output():
    """More distinct metric names than the native name table holds (2^18): the native memo stops taking
    series with new names, and the output stays the reference's, scrape after scrape."""
    body = b"".join(b"n%d 1\n" % i for i in range(263_000))
    outcomes = relayed_by_each(body, "none")
    python, native = outcomes["python"], outcomes["native"]
    assert [without_memo(one) for one in native] == [without_memo(one) for one in python]
    assert native[0].memo_entries <= 1 << 18 < python[0].memo_entries


@needs_native
def test_bodies_after_the_name_table_starts_over_keep_their_metadata():
    """Scrapes of more new metric names than half the native name table, memo renewed between them: the
    table starts over (its ids are reused) and every body still gets the reference's metadata and samples."""
    outcomes = {}
    for engine in ("python", "native"):
        rules = fresh_rules("none", (("relabel_cache_size", 1000),))
        outcomes[engine] = [
            scrape(engine, rules, body, (65536,), openmetrics=False, utf8_names=False, batches=())
            for body in (
                b"".join(b"# TYPE n%d_%d gauge\nn%d_%d 1\n" % (k, i, k, i) for i in range(140_000))
                for k in range(3)
            )
        ]
    assert [without_memo(one) for one in outcomes["native"]] == [
        without_memo(one) for one in outcomes["python"]
    ]
