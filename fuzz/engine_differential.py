"""Coverage-guided differential fuzz target: the compiled line engine against the Python reference.

Each input is a 16-byte header, read with atheris.FuzzedDataProvider into the options of one case (rule set,
format, utf8_names, on_invalid_line, limits, memo size, chunking, scrapes), and the body: the rest, as it is
(so that seeds and crash files hold readable exposition text). Both engines relay the case, each with fresh
Rules of its own; their outputs (feed by feed), counts and errors (class, located message, detail, cause,
action) must be equal, and neither may raise anything but the relay's own scrape errors. Any difference is
an AssertionError, which atheris reports as a crash and saves as a file.

    python fuzz/engine_differential.py [libFuzzer flags] [corpus dirs]   fuzz (fuzz/run does it, bounded)
    python fuzz/engine_differential.py CRASH_FILE                         run one input again
    python fuzz/engine_differential.py --show CRASH_FILE                  print the decoded case, both results
    python fuzz/engine_differential.py --write-seeds DIR                  write the seed corpus into DIR

FUZZ_NATIVE_DIR, when set, is a directory holding a build of `_engine*.so` to use instead of the one in
relay/ (fuzz/run puts a clang build with AddressSanitizer and libFuzzer coverage there); the harness checks
that it is the one loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import atheris
import yaml

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
HEADER = 16
"""Bytes of the input that choose the options; the rest is the body."""

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The modules a body goes through (not the configuration's: it is parsed once per option set, and cached).
LINE_PATH = ("relay.pipeline", "relay.pyengine", "relay.exposition", "relay.metadata", "relay.rules")
with atheris.instrument_imports(include=[*LINE_PATH, "relay.relabel", "relay.goregexp"]):
    import relay

    NATIVE_DIR = os.environ.get("FUZZ_NATIVE_DIR")
    if NATIVE_DIR:
        relay.__path__.insert(0, NATIVE_DIR)  # the sanitizer build of relay._engine wins over relay/'s
    from relay.config import UpstreamConfig, parse
    from relay.errors import ScrapeError
    from relay.pipeline import NATIVE, body_relabeler
    from relay.rules import Rules

if NATIVE is None:
    sys.exit("fuzz: the compiled engine is not importable (built? RELAY_NO_EXTENSIONS set?)")
if NATIVE_DIR:
    _loaded = Path(sys.modules["relay._engine"].__file__ or "").resolve().parent
    if _loaded != Path(NATIVE_DIR).resolve():
        sys.exit(f"fuzz: FUZZ_NATIVE_DIR={NATIVE_DIR} but relay._engine came from {_loaded}")

_NAME = ["__name__"]
RULE_SETS: tuple[tuple[str, list[dict[str, Any]]], ...] = (
    ("none", []),
    ("drop", [{"source_labels": _NAME, "regex": "b.*|.*_sum", "action": "drop"}]),
    ("keep", [{"source_labels": ["a"], "regex": "|x.*", "action": "keep"}]),
    ("static", [{"target_label": "cluster", "replacement": "c1"}]),
    # Label sets collide: duplicates.
    ("labeldrop", [{"action": "labeldrop", "regex": "a|le|quantile"}]),
    ("labelmap", [{"action": "labelmap", "regex": "(a|b)", "replacement": "m_$1"}]),
    # Renames: into another family (metadata placement), away from _total/_bucket (exemplars go).
    (
        "rename",
        [
            {"source_labels": _NAME, "regex": "a(.*)", "target_label": "__name__", "replacement": "z$1"},
            {"source_labels": _NAME, "regex": "(.*)_total", "target_label": "__name__", "replacement": "$1"},
        ],
    ),
    # Names that are invalid, or valid only as quoted UTF-8.
    (
        "bad-names",
        [
            {"source_labels": _NAME, "regex": "b.*", "target_label": "__name__", "replacement": "b.x"},
            {"source_labels": _NAME, "regex": "c.*", "target_label": "__name__", "replacement": ""},
            {"source_labels": ["a"], "regex": "(.+)", "target_label": "__name__", "replacement": "$1"},
            {"source_labels": ["b"], "regex": "(.+)", "target_label": "${1}", "replacement": "v"},
        ],
    ),
    (
        "case",
        [
            {"source_labels": ["a"], "target_label": "a", "action": "uppercase"},
            {"source_labels": ["b"], "regex": "(.*)", "target_label": "b", "replacement": "${1}"},
            {"source_labels": _NAME, "target_label": "h", "modulus": 3, "action": "hashmod"},
        ],
    ),
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One fuzz input, decoded."""

    rule_set: int
    openmetrics: bool
    utf8_names: bool
    drop_invalid: bool
    sample_limit: int
    label_limit: int
    label_name_length_limit: int
    label_value_length_limit: int
    line_length_limit: int  # 0: the default (1 MiB)
    relabel_cache_size: int  # 0: the default
    chunking: int  # 0 whole, 1 fixed size, 2 random cuts
    chunk_param: int
    scrapes: int
    grow: bool  # many distinct series first: the native tables grow
    body: bytes

    def rules(self) -> Rules:
        """Fresh Rules (and so an empty memo) for the case's options."""
        options = dataclasses.replace(self, body=b"", chunking=0, chunk_param=0, scrapes=1, grow=False)
        return Rules.for_upstream(upstream_config(options))

    def full_body(self) -> bytes:
        if not self.grow:
            return self.body
        # More than 3/4 of the native memo's first table (4096 slots), and of its duplicate watch.
        return b"".join(b'grow{i="%d"} %d\n' % (i, i) for i in range(3100)) + self.body

    def chunks(self) -> list[bytes]:
        body = self.full_body()
        if self.chunking == 1:
            size = self.chunk_param % 67 + 1
            return [body[i : i + size] for i in range(0, len(body), size)]
        if self.chunking == 2:
            choose = random.Random(self.chunk_param)  # noqa: S311 - deterministic cut points, not secrets
            cuts = sorted(choose.randrange(len(body) + 1) for _ in range(choose.randrange(1, 9)))
            edges = [0, *cuts, len(body)]
            return [body[start:end] for start, end in itertools.pairwise(edges)]
        return [body]


@functools.lru_cache(maxsize=4096)
def upstream_config(options: Case) -> UpstreamConfig:
    """The upstream configuration of a case's options, read from YAML as a file would be (once)."""
    upstream: dict[str, Any] = {
        "name": "f",
        "url": "http://h/",
        "metric_relabel_configs": RULE_SETS[options.rule_set][1],
        "on_invalid_line": "drop" if options.drop_invalid else "fail",
        "sample_limit": options.sample_limit,
        "label_limit": options.label_limit,
        "label_name_length_limit": options.label_name_length_limit,
        "label_value_length_limit": options.label_value_length_limit,
    }
    if options.line_length_limit:
        upstream["line_length_limit"] = str(options.line_length_limit)
    if options.relabel_cache_size:
        upstream["relabel_cache_size"] = options.relabel_cache_size
    text = yaml.safe_dump({"upstreams": [upstream]})
    return parse(text, source="fuzz.yml", base_dir=Path()).upstreams[0]


def decode(data: bytes) -> Case:
    """The case an input stands for (a short input gives the first option of each)."""
    fdp = atheris.FuzzedDataProvider(data[:HEADER])

    def small(top: int) -> int:  # 0 (no limit) half of the time, else 1..top
        return fdp.ConsumeIntInRange(1, top) if fdp.ConsumeBool() else 0

    return Case(
        rule_set=fdp.ConsumeIntInRange(0, len(RULE_SETS) - 1),
        openmetrics=fdp.ConsumeBool(),
        utf8_names=fdp.ConsumeBool(),
        drop_invalid=fdp.ConsumeBool(),
        sample_limit=small(6),
        label_limit=small(4),
        label_name_length_limit=small(8),
        label_value_length_limit=small(8),
        line_length_limit=small(80),
        relabel_cache_size=small(4),
        chunking=fdp.ConsumeIntInRange(0, 2),
        chunk_param=fdp.ConsumeIntInRange(0, 65535),
        scrapes=fdp.ConsumeIntInRange(1, 2),
        grow=fdp.ConsumeIntInRange(0, 255) == 255,  # costly (thousands of series): rare
        body=data[HEADER:],
    )


def run(engine: str, case: Case) -> list[tuple[object, ...]]:
    """What one engine makes of the case: per scrape, the outputs, the error, and the counts."""
    rules = case.rules()
    results: list[tuple[object, ...]] = []
    for _ in range(case.scrapes):
        relabeler = body_relabeler(
            rules, openmetrics=case.openmetrics, utf8_names=case.utf8_names, engine=engine
        )
        outputs: list[bytes] = []
        error: tuple[str, ...] | None = None
        try:
            outputs.extend(relabeler.feed(chunk) for chunk in case.chunks())
            outputs.append(relabeler.finish())
        except ScrapeError as exc:
            error = (type(exc).__name__, str(exc), exc.detail, exc.cause, exc.action)
        except Exception as exc:  # anything else is a bug in either engine
            raise AssertionError(f"{engine} engine raised {type(exc).__name__}: {exc}\n{case!r}") from exc
        counts = (relabeler.samples_in, relabeler.samples_out, dict(relabeler.dropped), relabeler.memo_misses)
        results.append((b"".join(outputs), outputs, error, counts))
    return results


COMPARED = ("output", "output per feed", "error", "counts (in, out, dropped, memo misses)")


def differences(case: Case) -> Iterator[str]:
    """How the native engine's results differ from the Python reference's (nothing when equal)."""
    python, native = run("python", case), run("native", case)
    for scrape, (want, got) in enumerate(zip(python, native, strict=True), 1):
        for index, what in enumerate(COMPARED):
            if want[index] != got[index]:
                yield f"scrape {scrape}: {what}:\n  python: {want[index]!r}\n  native: {got[index]!r}"
                if index == 0:
                    break  # the per-feed split differs too: one line is enough


def test_one_input(data: bytes) -> None:
    case = decode(data)
    found = list(differences(case))
    if found:
        raise AssertionError("the engines differ\n" + "\n".join(found) + f"\ncase: {case!r}")


# --- seeds --------------------------------------------------------------------------------------------

SEED_BODIES = (
    b"# HELP a_total A counter.\n# TYPE a_total counter\na_total 1\n"
    b'a_total{a="x"} 2 1700000000000\n# TYPE b gauge\nb{a="1",b="2"} -3.5e-3\nb{b="2",a="1"} 4\n'
    b'# TYPE h histogram\nh_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n'
    b'# TYPE s summary\ns{quantile="0.9"} NaN\ns_sum +Inf\ns_count 0x1p3\n',
    b"# TYPE a_total counter\n# UNIT a_total seconds\n"
    b'a_total{a="x"} 1 # {trace_id="abc"} 0.5 1700000000.001\na_created 1.7e9\n'
    b'# TYPE h histogram\nh_bucket{le="1.0"} 0 # {t="1"} 0.3\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 1\n'
    b"# EOF\n",
    b'c{a=""} 1\nc{a="",b="y"} 2\n  c{a="q"}  3  \nc\t4\n\n# comment\n#\nc{a="\\n\\"\\\\"} 5\n'
    b'c{a="x",} 6\nc{ a = "x" } 7\nb 1\nb 1\nd{b="1"} 1\r\n',
    b'bad{a="x} 1\nbad{a=x} 1\nbad 1x\nbad\nbad{} 1 99999999999999999999\n1bad 1\n'
    b'bad{a="\\q"} 1\nbad 1e400\nbad{a="x"}1\nbad{=""} 1\n',
    b'{"my.metric",a="b"} 1\n{"c.d"} 2\nok{"a.b"="c"} 3\n# TYPE "my.metric" gauge\n',
    b"x 1 2\nx 1 -2\nx +1 2\nx 1. 2\nx .5\nx -Inf\nx 00012e-2\n# EOF\n",
)


def seed_bodies() -> Iterator[bytes]:
    """The fixed small bodies, and slices of the shared fixtures where they are present."""
    yield from SEED_BODIES
    if not FIXTURES.is_dir():
        return
    for path in sorted(FIXTURES.glob("*")):
        if path.suffix not in {".prom", ".txt"} or path.name == "SOURCES.md":
            continue
        lines = path.read_bytes().splitlines(keepends=True)
        for start in (0, len(lines) // 2, max(0, len(lines) - 30)):
            yield b"".join(lines[start : start + 30])


def seed_header(choose: random.Random, body: bytes, *, variant: int) -> bytes:
    """A header for a seed: random options, but cheap ones (no `grow`), and mostly the body's own format."""
    openmetrics = body.rstrip().endswith(b"# EOF")
    while True:
        header = choose.randbytes(HEADER)
        case = decode(header)
        if not case.grow and (variant == 3 or case.openmetrics == openmetrics):
            return header


def write_seeds(directory: Path) -> int:
    """Each seed body under a few headers (the FuzzedDataProvider decides what those mean), and one case
    that makes the native tables grow."""
    directory.mkdir(parents=True, exist_ok=True)
    choose = random.Random(1)  # noqa: S311 - reproducible headers, not secrets
    count = 0
    for number, body in enumerate(seed_bodies()):
        for variant in range(4):
            header = bytes(HEADER) if variant == 0 else seed_header(choose, body, variant=variant)
            (directory / f"seed-{number:02d}-{variant}").write_bytes(header + body)
            count += 1
    while not decode(header := choose.randbytes(HEADER)).grow:
        pass
    (directory / "seed-grow").write_bytes(header + SEED_BODIES[0])
    return count + 1


def show(path: Path) -> None:
    """Print the case a file stands for and what each engine made of it."""
    case = decode(path.read_bytes())
    print(f"{case!r}\nrule set: {RULE_SETS[case.rule_set][0]}\nchunks: {case.chunks()!r}")
    for engine in ("python", "native"):
        for scrape, result in enumerate(run(engine, case), 1):
            print(f"{engine} scrape {scrape}: {result!r}")
    found = list(differences(case))
    print("\n".join(found) if found else "no difference")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        print(f"fuzz: {write_seeds(Path(sys.argv[2]))} seeds written to {sys.argv[2]}")
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--show":
        show(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
