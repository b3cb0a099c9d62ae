"""The located YAML reader: keys and their lines, merge keys, did-you-mean, typed scalars, problem order."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from relay.errors import Problem
from relay.yamlnodes import NodeReader, in_line_order


def problems(reader: NodeReader) -> list[tuple[str, str, int | None]]:
    """The reader's problems as (path, message, line)."""
    return [(problem.path, problem.message, problem.line) for problem in reader.problems]


def compose(text: str) -> yaml.Node:
    """The node tree of a YAML document that is not empty."""
    node = yaml.compose(text)
    assert node is not None
    return node


def test_problems_in_line_order():
    """Problems of the whole file (no line) come first, then by line; equal lines keep their order."""
    found = [Problem("b", "x", 3), Problem("", "whole", None), Problem("a", "y", 1), Problem("c", "z", 3)]
    assert [problem.path for problem in in_line_order(found)] == ["", "a", "b", "c"]


# (document, keys the section knows or None for any, required keys, the keys read, the problems)
MAPPINGS = [
    pytest.param("a: 1\nb: 2\n", None, set(), {"a": "1", "b": "2"}, [], id="any-keys"),
    pytest.param("a: 1\na: 2\n", None, set(), {"a": "1"}, [("top.a", "duplicate key", 2)], id="duplicate"),
    pytest.param(
        "a: 1\nc: 3\n",
        {"a", "b"},
        {"b"},
        {"a": "1"},
        [("top.c", "unknown key (known keys: a, b)", 2), ("top.b", "is required", 1)],
        id="unknown-and-required",
    ),
    pytest.param("- 1\n", None, set(), {}, [("top", "must be a mapping, not a list", 1)], id="a-list"),
    pytest.param("~\n", None, {"a", "b"}, {}, [("top", "is empty; needs a, b", 1)], id="empty-but-required"),
    pytest.param("~\n", None, set(), {}, [], id="empty"),
    pytest.param("? [a]\n: 1\n", None, set(), {}, [("top", "keys must be strings", 1)], id="list-as-key"),
]


@pytest.mark.parametrize(("text", "known", "required", "read", "found"), MAPPINGS)
def test_mappings(text, known, required, read, found):
    """A mapping gives its keys; unknown, duplicate and missing required keys, and what is no mapping, are
    problems at their path and line."""
    reader = NodeReader(Path("/etc/relay"))
    keys = reader.mapping(compose(text), "top", known, required)
    assert {key: node.value for key, node in keys.items()} == read
    assert problems(reader) == found


MERGES = """\
base: &base
  x: 1
  y: 2
other: &other
  x: 10
  z: 30
one:
  <<: *base
  x: 3
both:
  <<: [*base, *other]
"""


@pytest.mark.parametrize(
    ("section", "read", "lines"),
    [
        ("one", {"x": "3", "y": "2"}, {"x": 9, "y": 3, "": 8}),
        ("both", {"x": "1", "y": "2", "z": "30"}, {"x": 2, "y": 3, "z": 6, "": 11}),
    ],
    ids=["explicit-key-wins", "first-merged-mapping-wins"],
)
def test_merge_keys(section, read, lines):
    """`<<: *a` and `<<: [*a, *b]` bring keys in (explicit keys win, then the first merged mapping, as
    go-yaml); each key's line is where it is written, and '' is the mapping's own line."""
    reader = NodeReader(Path("/etc/relay"))
    node = reader.mapping(compose(MERGES), "", None)[section]
    keys = reader.mapping(node, section, None)
    assert {key: value.value for key, value in keys.items()} == read
    assert reader.lines(node) == lines
    assert reader.key_line(node, "y") == 3
    assert reader.problems == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (
            "m: &m\n  x: 1\n  <<: *m\n",
            ("m.<<", "a mapping cannot merge itself (its anchor is around the merge)", 3),
        ),
        ("m:\n  <<: 1\n", ("m.<<", "a merge needs a mapping or a list of mappings (*anchors)", 2)),
        (
            "a: &a [1]\nm:\n  <<: [*a]\n",
            ("m.<<", "a merge needs a mapping or a list of mappings (*anchors)", 1),
        ),
    ],
    ids=["itself", "a-scalar", "a-list-of-lists"],
)
def test_bad_merges(text, found):
    """A merge of anything but mappings, or of the mapping it is in, is a problem; the rest still reads."""
    reader = NodeReader(Path("/etc/relay"))
    reader.mapping(reader.mapping(compose(text), "", None)["m"], "m", None)
    assert problems(reader) == [found]


class Schema(NodeReader):
    """A section that knows where names from elsewhere belong."""

    foreign_keys: ClassVar = {
        "relabel_configs": ("metric_relabel_configs", "relabel_configs is for targets"),
        "job_name": ("name", "an upstream's name"),
    }
    camel_case_hint: ClassVar = "snake_case here"


# (key, the keys the section knows, the message)
UNKNOWN_KEYS = [
    pytest.param(
        "relabel_configs",
        {"metric_relabel_configs", "url"},
        "unknown key; did you mean metric_relabel_configs? (relabel_configs is for targets)",
        id="foreign-key",
    ),
    pytest.param(
        "job_name",
        {"url", "timeout"},
        "unknown key (known keys: timeout, url)",
        id="foreign-key-of-another-section",
    ),
    pytest.param(
        "tlsConfig",
        {"tls_config", "url"},
        "unknown key; did you mean tls_config? (snake_case here)",
        id="camel-case",
    ),
    pytest.param("timeuot", {"timeout", "url"}, "unknown key; did you mean timeout?", id="close-match"),
    pytest.param("colour", {"timeout", "url"}, "unknown key (known keys: timeout, url)", id="nothing-close"),
]


@pytest.mark.parametrize(("key", "known", "message"), UNKNOWN_KEYS)
def test_unknown_key_messages(key, known, message):
    """An unknown key gets the schema's hint when its suggestion is a key here, else the snake_case form
    when that is known, else the closest key, else the list of keys."""
    assert Schema(Path("/")).unknown_key_message(key, known) == message


# (reader method, scalar, the value read, the problem)
SCALARS = [
    pytest.param("count", "3", 3, None, id="count"),
    pytest.param("count", "-1", None, "must not be negative", id="negative-count"),
    pytest.param("count", "true", None, "must be a whole number, not bool 'true'", id="bool-is-no-count"),
    pytest.param("count", "1.5", None, "must be a whole number, not float '1.5'", id="fraction"),
    pytest.param("boolean", "false", False, None, id="boolean"),
    pytest.param("boolean", "1", None, "must be true or false, not int '1'", id="number-is-no-boolean"),
    pytest.param("string", "1", "1", None, id="number-as-its-text"),
    pytest.param("string", "~", None, "must be a string, not empty", id="null-string"),
    pytest.param("string", '""', None, "must not be empty", id="empty-string"),
    pytest.param("string", "{a: 1}", None, "must be a string, not a mapping", id="mapping-string"),
    pytest.param("string", "[a]", None, "must be a string, not a list", id="list-string"),
    pytest.param("duration", "1m30s", 90.0, None, id="duration"),
    pytest.param(
        "duration",
        "10",
        None,
        "not a duration: '10' (use a number with a unit, e.g. 10s, 1m30s, 500ms)",
        id="duration-without-unit",
    ),
    pytest.param("size", "2KB", 2048, None, id="size"),
    pytest.param(
        "size",
        "1XB",
        None,
        "not a size: '1XB' (use bytes or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB)",
        id="unknown-size-unit",
    ),
    pytest.param("path", "tls/ca.crt", Path("/etc/relay/tls/ca.crt"), None, id="relative-path"),
    pytest.param("path", "/abs/ca.crt", Path("/abs/ca.crt"), None, id="absolute-path"),
]


@pytest.mark.parametrize(("method", "text", "value", "problem"), SCALARS)
def test_scalars(method, text, value, problem):
    """Each scalar reader gives the value or None with the problem, naming what it found instead."""
    reader = NodeReader(Path("/etc/relay"))
    assert getattr(reader, method)(compose(f"k: {text}\n").value[0][1], "k") == value
    assert problems(reader) == ([("k", problem, 1)] if problem else [])


def test_string_lists():
    """A list of strings takes empty items as '' and reports an item that is no string at its index."""
    reader = NodeReader(Path("/"))
    assert list(reader.string_list(compose("[a, '', 1, [x], ~]"), "labels")) == ["a", "", "1", ""]
    assert problems(reader) == [("labels[3]", "must be a string, not a list", 1)]
    assert reader.sequence(compose("a: 1"), "labels") == []
    assert problems(reader)[-1] == ("labels", "must be a list, not a mapping", 1)
