"""The Python line engine's own parts: exemplar splitting, the bounded duplicate watch, counts per body."""

from __future__ import annotations

from pathlib import Path

import pytest

import relay.pyengine
from relay.config import parse
from relay.errors import InvalidExpositionError
from relay.pyengine import PythonBodyRelabeler, split_exemplar
from relay.rules import Rules

# Every series loses label `i`: series that differ only in it become duplicates.
DROP_I = "    metric_relabel_configs:\n      - {regex: i, action: labeldrop}\n"


def rules(extra: str = "") -> Rules:
    """Fresh rules for a one-upstream configuration with `extra` settings."""
    text = f"upstreams:\n  - name: t\n    url: https://h/m\n{extra}"
    return Rules.for_upstream(parse(text, source="r.yml", base_dir=Path("/")).upstreams[0])


def relay_body(relabeler: PythonBodyRelabeler, body: bytes) -> bytes:
    """The relayed body, fed whole."""
    return relabeler.feed(body) + relabeler.finish()


# (OpenMetrics sample line, the sample without its exemplar, the exemplar)
EXEMPLARS = [
    pytest.param(b'a_total 1 # {t="x"} 1', b"a_total 1", b' # {t="x"} 1', id="counter"),
    pytest.param(b'a_bucket{le="1"} 1 # {} 1', b'a_bucket{le="1"} 1', b" # {} 1", id="bucket"),
    pytest.param(b"a_total 1", b"a_total 1", b"", id="none"),
    pytest.param(b'a_total{v=" # "} 1', b'a_total{v=" # "} 1', b"", id="hash-inside-a-value"),
    pytest.param(
        b'a_total{v=" # "} 1 # {t="x"} 2 3', b'a_total{v=" # "} 1', b' # {t="x"} 2 3', id="after-such-a-value"
    ),
    pytest.param(b'{"a_total"} 1 # {} 1', b'{"a_total"} 1', b" # {} 1", id="quoted-name"),
]


@pytest.mark.parametrize(("line", "sample", "exemplar"), EXEMPLARS)
def test_exemplars_are_split_from_their_sample(line, sample, exemplar):
    """An exemplar is what follows the first ` # ` outside the label set."""
    assert split_exemplar(line) == (sample, exemplar)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param(
            b'g 1 # {t="x"} 1', "exemplars are allowed only on _total and _bucket samples", id="on-a-gauge"
        ),
        pytest.param(
            b'{"g"} 1 # {} 1',
            "exemplars are allowed only on _total and _bucket samples",
            id="on-a-quoted-gauge",
        ),
        pytest.param(b'a_total 1 # {t="x"}', "malformed exemplar", id="without-value"),
        pytest.param(b"a_total 1 # x", "malformed exemplar", id="without-labels"),
    ],
)
def test_bad_exemplars_are_refused(line, message):
    """An exemplar where OpenMetrics allows none, or one that is malformed, is an invalid line."""
    with pytest.raises(InvalidExpositionError, match=message):
        split_exemplar(line)


def test_duplicates_are_watched_up_to_a_bound(monkeypatch):
    """Repeats of the first DUPLICATE_WATCH_LIMIT series are dropped; past the bound series go unwatched,
    so memory stays bounded for any body."""
    monkeypatch.setattr(relay.pyengine, "DUPLICATE_WATCH_LIMIT", 2)
    relabeler = PythonBodyRelabeler(rules(DROP_I))
    body = b'a{i="1"} 1\nb 1\nc 1\na{i="2"} 2\nc{i="2"} 2\n'
    assert relay_body(relabeler, body) == b"a 1\nb 1\nc 1\nc 2\n"
    assert relabeler.dropped == {"duplicate": 1}


def test_without_rewriting_rules_nothing_is_watched():
    """Rules that only keep or drop cannot make duplicates: a repeated series goes out as it came."""
    relabeler = PythonBodyRelabeler(rules())
    assert relay_body(relabeler, b"a 1\na 2\n") == b"a 1\na 2\n"
    assert relabeler.dropped == {}


def test_counts_are_per_body_and_misses_are_the_memos():
    """Samples in and out count this body's; memo misses count what the shared memo learnt meanwhile."""
    shared = rules(DROP_I)
    first = PythonBodyRelabeler(shared)
    assert relay_body(first, b'a{i="1"} 1\na{i="2"} 2\nb 1\n') == b"a 1\nb 1\n"
    assert (first.samples_in, first.samples_out, first.memo_misses) == (3, 2, 3)
    second = PythonBodyRelabeler(shared)
    interleaved = PythonBodyRelabeler(shared)
    assert relay_body(interleaved, b"new 1\n") == b"new 1\n"
    assert relay_body(second, b"b 1\n") == b"b 1\n"
    assert (second.samples_in, second.samples_out, second.memo_misses) == (1, 1, 1)  # `new`, learnt meanwhile


def test_the_engine_says_what_it_is():
    """The Python engine is named so in the build info and is not worth a worker thread (it holds the GIL)."""
    relabeler = PythonBodyRelabeler(rules())
    assert (relabeler.engine, relabeler.releases_gil) == ("python", False)
