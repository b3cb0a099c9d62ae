"""Relabel rules: Prometheus' test table, the traps of its semantics, validation, agreement with promtool."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import re2
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config import RelabelRuleSpec
from relay.errors import ConfigError
from relay.relabel import (
    ACTIONS,
    RelabelProgram,
    is_valid_label_name,
)
from tests.support import require_tool

Fields = dict[str, Any]


def specs(*rules: Fields) -> list[RelabelRuleSpec]:
    """Rules as the configuration would give them: defaults filled in, each at its own location."""
    return [
        RelabelRuleSpec(location=f"upstreams[0].metric_relabel_configs[{index}]", **fields)
        for index, fields in enumerate(rules)
    ]


def program(*rules: Fields) -> RelabelProgram:
    """Compile rules written as their YAML fields."""
    return RelabelProgram.compile(specs(*rules))


def refusal_paths(*rules: Fields) -> list[str]:
    """The paths of every problem compiling the rules finds; fails if it finds none."""
    with pytest.raises(ConfigError) as caught:
        program(*rules)
    return [problem.path for problem in caught.value.problems]


# --- applying rules: Prometheus' TestRelabel table, then the traps it does not cover -----------------

ABC = {"a": "foo", "b": "bar", "c": "baz"}
PORTS = {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"}
MULTILINE = {"a": "line1\nline2", "b": "bar", "c": "baz"}

PROMETHEUS_TABLE = [
    pytest.param(
        ABC,
        [{"source_labels": ("a",), "regex": "f(.*)", "target_label": "d", "replacement": "ch${1}-ch${1}"}],
        {**ABC, "d": "choo-choo"},
        id="replace-braced-group-twice",
    ),
    pytest.param(
        ABC,
        [
            {
                "source_labels": ("a", "b"),
                "regex": "f(.*);(.*)r",
                "target_label": "a",
                "replacement": "b${1}${2}m",
            },
            {
                "source_labels": ("c", "a"),
                "regex": "(b).*b(.*)ba(.*)",
                "target_label": "d",
                "replacement": "$1$2$2$3",
            },
        ],
        {**ABC, "a": "boobam", "d": "boooom"},
        id="later-rule-reads-earlier-rule-output",
    ),
    pytest.param(
        {"a": "foo"},
        [
            {"source_labels": ("a",), "regex": ".*o.*", "action": "drop"},
            {"source_labels": ("a",), "regex": "f(.*)", "target_label": "d", "replacement": "ch$1-ch$1"},
        ],
        None,
        id="drop-stops-the-program",
    ),
    pytest.param(
        {"a": "foo", "b": "bar"},
        [{"source_labels": ("a",), "regex": ".*o.*", "action": "drop"}],
        None,
        id="drop-on-match",
    ),
    pytest.param(
        {"a": "abc"},
        [{"source_labels": ("a",), "regex": ".*(b).*", "target_label": "d"}],
        {"a": "abc", "d": "b"},
        id="replace-default-replacement-is-group-1",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ("a",), "regex": "no-match", "action": "drop"}],
        {"a": "foo"},
        id="drop-without-match-keeps",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ("a",), "regex": "f|o", "action": "drop"}],
        {"a": "foo"},
        id="anchoring-covers-the-whole-alternation",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ("a",), "regex": "no-match", "action": "keep"}],
        None,
        id="keep-without-match-drops",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ("a",), "regex": "f.*", "action": "keep"}],
        {"a": "foo"},
        id="keep-on-match",
    ),
    pytest.param(
        {"a": "boo"},
        [{"source_labels": ("a",), "regex": "f", "target_label": "b", "replacement": "bar"}],
        {"a": "boo"},
        id="replace-without-match-writes-nothing",
    ),
    pytest.param(
        {"a": "foo", "f": "baz"},
        [{"source_labels": ("a",), "regex": "(f).*", "target_label": "$1", "replacement": "$2"}],
        {"a": "foo"},
        id="empty-result-deletes-expanded-target",
    ),
    pytest.param(
        ABC,
        [{"source_labels": ("c",), "target_label": "d", "action": "hashmod", "modulus": 1000}],
        {**ABC, "d": "976"},
        id="hashmod-value",
    ),
    pytest.param(
        {"a": "foo\nbar"},
        [{"source_labels": ("a",), "target_label": "b", "action": "hashmod", "modulus": 1000}],
        {"a": "foo\nbar", "b": "734"},
        id="hashmod-value-with-newline",
    ),
    pytest.param(
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "replacement": "bar_${1}", "action": "labelmap"}],
        {"a": "foo", "b1": "bar", "b2": "baz", "bar_b1": "bar", "bar_b2": "baz"},
        id="labelmap-matches-names",
    ),
    pytest.param(
        {"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc"},
        [{"regex": "__meta_(my.*)", "replacement": "${1}", "action": "labelmap"}],
        {
            "a": "foo",
            "__meta_my_bar": "aaa",
            "__meta_my_baz": "bbb",
            "__meta_other": "ccc",
            "my_bar": "aaa",
            "my_baz": "bbb",
        },
        id="labelmap-strips-prefix",
    ),
    pytest.param(
        {"a": "some-name-value"},
        [
            {
                "source_labels": ("a",),
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${2}",
                "target_label": "${1}",
            }
        ],
        {"a": "some-name-value", "name": "value"},
        id="target-label-from-group",
    ),
    pytest.param(
        {"a": "some-name-value"},
        [
            {
                "source_labels": ("a",),
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${3}",
                "target_label": "${1}",
            }
        ],
        {"a": "some-name-value"},
        id="missing-group-in-replacement-is-empty",
    ),
    pytest.param(
        {"a": "some-name-0"},
        [
            {
                "source_labels": ("a",),
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
            {
                "source_labels": ("a",),
                "regex": "some-([^-]+)(-[^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
        ],
        {"a": "some-name-0"},
        id="target-expanding-to-invalid-name-is-skipped",
    ),
    pytest.param(
        {"__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar"},
        [
            {
                "source_labels": ("__meta_sd_tags",),
                "regex": "(?:.+,|^)path:(/[^,]+).*",
                "replacement": "${1}",
                "target_label": "__metrics_path__",
            },
            {
                "source_labels": ("__meta_sd_tags",),
                "regex": "(?:.+,|^)job:([^,]+).*",
                "replacement": "${1}",
                "target_label": "job",
            },
            {
                "source_labels": ("__meta_sd_tags",),
                "regex": "(?:.+,|^)label:([^=]+)=([^,]+).*",
                "replacement": "${2}",
                "target_label": "${1}",
            },
        ],
        {
            "__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar",
            "__metrics_path__": "/secret",
            "job": "some-job",
            "foo": "bar",
        },
        id="tags-parsed-into-labels",
    ),
    pytest.param(
        {
            "__meta_kubernetes_pod_container_port_name": "foo",
            "__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091",
        },
        [
            {"regex": "^__meta_kubernetes_pod_container_port_name$", "action": "labeldrop"},
            {
                "source_labels": ("__meta_kubernetes_pod_annotation_XXX_metrics_port",),
                "regex": "(.+)",
                "replacement": "metrics",
                "target_label": "__meta_kubernetes_pod_container_port_name",
            },
            {
                "source_labels": ("__meta_kubernetes_pod_container_port_name",),
                "regex": "^metrics$",
                "action": "keep",
            },
        ],
        {
            "__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091",
            "__meta_kubernetes_pod_container_port_name": "metrics",
        },
        id="label-deleted-then-set-reads-back",
    ),
    pytest.param(
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labelkeep"}],
        {"b1": "bar", "b2": "baz"},
        id="labelkeep",
    ),
    pytest.param(
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labeldrop"}],
        {"a": "foo"},
        id="labeldrop",
    ),
    pytest.param(
        {"foo": "bAr123Foo"},
        [
            {"source_labels": ("foo",), "action": "uppercase", "target_label": "foo_uppercase"},
            {"source_labels": ("foo",), "action": "lowercase", "target_label": "foo_lowercase"},
        ],
        {"foo": "bAr123Foo", "foo_lowercase": "bar123foo", "foo_uppercase": "BAR123FOO"},
        id="uppercase-lowercase",
    ),
    pytest.param(
        PORTS,
        [{"source_labels": ("__tmp_port",), "action": "keepequal", "target_label": "__port1"}],
        PORTS,
        id="keepequal-equal-keeps",
    ),
    pytest.param(
        PORTS,
        [{"source_labels": ("__tmp_port",), "action": "dropequal", "target_label": "__port1"}],
        None,
        id="dropequal-equal-drops",
    ),
    pytest.param(
        PORTS,
        [{"source_labels": ("__tmp_port",), "action": "dropequal", "target_label": "__port2"}],
        PORTS,
        id="dropequal-unequal-keeps",
    ),
    pytest.param(
        PORTS,
        [{"source_labels": ("__tmp_port",), "action": "keepequal", "target_label": "__port2"}],
        None,
        id="keepequal-unequal-drops",
    ),
    pytest.param(
        MULTILINE,
        [{"source_labels": ("a",), "regex": "line1.*line2", "target_label": "d", "replacement": "match${1}"}],
        {**MULTILINE, "d": "match"},
        id="dot-matches-newline",
    ),
    pytest.param(
        {**MULTILINE, "utf-8.label": "line1\nline2"},
        [
            {
                "source_labels": ("utf-8.label",),
                "regex": "line1.*line2",
                "target_label": "d",
                "replacement": "m",
            }
        ],
        {**MULTILINE, "utf-8.label": "line1\nline2", "d": "m"},
        id="utf8-source-label-is-read",
    ),
    pytest.param(
        MULTILINE,
        [
            {
                "source_labels": ("a",),
                "regex": "(line1).*(?<second>line2)",
                "target_label": "label1_${1}",
                "replacement": "val_${second}",
            },
            {
                "source_labels": ("a",),
                "regex": "(line1).*(?<second>line2)",
                "target_label": "label2_$1",
                "replacement": "val_$second",
            },
        ],
        {**MULTILINE, "label1_line1": "val_line2", "label2_line1": "val_line2"},
        id="named-group-angle-syntax",
    ),
    pytest.param(
        {"__name__": "http_requests_total"},
        [
            {
                "source_labels": ("__name__",),
                "regex": ".*_total$",
                "target_label": "__type__",
                "replacement": "counter",
            }
        ],
        {"__name__": "http_requests_total", "__type__": "counter"},
        id="dollar-inside-regex-is-end-anchor",
    ),
    pytest.param(
        {"__name__": "disk_usage_bytes"},
        [
            {
                "source_labels": ("__name__",),
                "regex": ".*_bytes$",
                "target_label": "__unit__",
                "replacement": "bytes",
            }
        ],
        {"__name__": "disk_usage_bytes", "__unit__": "bytes"},
        id="double-underscore-labels-stay",
    ),
]

TRAPS = [
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ("a",), "regex": "(f)oo", "target_label": "d", "replacement": "$1x"}],
        {"a": "foo"},
        id="dollar-1x-is-group-named-1x",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ("a",), "regex": "(f)oo", "target_label": "d", "replacement": "${1}x"}],
        {"a": "foo", "d": "fx"},
        id="braces-end-the-group-name",
    ),
    pytest.param(
        {"a": "foo"},
        [
            {
                "source_labels": ("a",),
                "regex": "(f)oo",
                "target_label": "d",
                "replacement": "$$1 $ ${ ${} $- a$",
            }
        ],
        {"a": "foo", "d": "$1 $ ${ ${} $- a$"},
        id="double-dollar-and-stray-dollars-are-text",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ("a",), "regex": "f(o)o", "target_label": "d", "replacement": "$0|$01|$é|${1}"}],
        {"a": "foo", "d": "foo|||o"},
        id="group-0-whole-leading-zero-and-unicode-names",
    ),
    pytest.param(
        {"a": "b"},
        [{"source_labels": ("a",), "regex": "(?P<n>a)|(?P<n>b)", "target_label": "d", "replacement": "<$n>"}],
        {"a": "b", "d": "<b>"},
        id="repeated-group-name-takes-first-that-matched",
    ),
    pytest.param(
        {"a": "x", "b": "y"},
        [{"source_labels": ("a", "missing", "b"), "regex": "x;;y", "action": "keep"}],
        {"a": "x", "b": "y"},
        id="missing-source-label-joins-as-empty",
    ),
    pytest.param(
        {"a": "x", "b": ""},
        [{"source_labels": ("b", "a"), "separator": "", "regex": "x", "action": "keep"}],
        {"a": "x"},
        id="empty-input-value-is-absent",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ("a",), "target_label": "a", "replacement": ""}],
        None,
        id="empty-result-deleting-last-label-drops",
    ),
    pytest.param(
        {"v": "١٢"},
        [{"source_labels": ("v",), "regex": r"\d+", "action": "drop"}],
        {"v": "١٢"},
        id="re2-digit-class-is-ascii",
    ),
    pytest.param(
        {"v": "AB"},
        [{"source_labels": ("v",), "regex": "ab", "action": "drop"}],
        {"v": "AB"},
        id="regex-is-case-sensitive",
    ),
    pytest.param(
        {"__name__": "up", "a": "1"},
        [{"source_labels": ("__name__",), "regex": "up", "action": "DROP"}],
        None,
        id="case-insensitive-action",
    ),
    pytest.param(
        {"__name__": "up", "a_x": "1"},
        [{"regex": "a_(.*)", "action": "LabelMap"}],
        {"__name__": "up", "a_x": "1", "x": "1"},
        id="case-insensitive-action-labelmap",
    ),
    pytest.param(
        {"a": "ax"},
        [{"source_labels": ("a",), "regex": "a)|(b", "action": "keep"}],
        {"a": "ax"},
        id="anchoring-escaped-by-unbalanced-parens-as-in-prometheus",
    ),
    pytest.param(
        {"b_x": "2"},
        [
            {"target_label": "a_x", "replacement": "1"},
            {"regex": "[ab]_(.*)", "action": "labelmap"},
        ],
        {"a_x": "1", "b_x": "2", "x": "1"},
        id="labelmap-collision-visits-rule-written-labels-last",
    ),
    pytest.param(
        {"__name__": "old_total"},
        [
            {
                "source_labels": ("__name__",),
                "regex": "old_(.*)",
                "target_label": "__name__",
                "replacement": "new_$1",
            }
        ],
        {"__name__": "new_total"},
        id="rename-through-name-label",
    ),
    pytest.param(
        {"a": "1"},
        [{"target_label": "static", "replacement": "value"}],
        {"a": "1", "static": "value"},
        id="no-source-labels-default-regex-sets-constant",
    ),
    pytest.param(
        {"v": "straße \u0391\u03a3 \u0130 \u1fb3"},
        [
            {"source_labels": ("v",), "action": "uppercase", "target_label": "up"},
            {"source_labels": ("v",), "action": "lowercase", "target_label": "low"},
        ],
        {
            "v": "straße \u0391\u03a3 \u0130 \u1fb3",
            # ß has no one-character capital; capital sigma lowers to the plain (not final) small sigma;
            # dotted capital I lowers to a plain i; alpha with ypogegrammeni uppers to its titlecase form.
            "up": "STRAßE \u0391\u03a3 \u0130 \u1fbc",
            "low": "straße \u03b1\u03c3 i \u1fb3",
        },
        id="go-case-mapping-one-to-one",
    ),
    pytest.param(
        {"a": "x"},
        [{"source_labels": ("a",), "target_label": "h", "action": "hashmod", "modulus": 2**64 - 1}],
        {"a": "x", "h": "17710500428000290726"},
        id="hashmod-full-64-bit-modulus",
    ),
    pytest.param(
        {"ab": "1"},
        [{"regex": "(b)", "replacement": "m_$1", "action": "labelmap"}],
        {"ab": "1"},
        id="labelmap-regex-anchored-on-name",
    ),
    pytest.param(
        {"xab": "1"},
        [{"regex": "a)|(b", "replacement": "X", "action": "labelmap"}],
        {"xab": "1", "xaX": "1"},
        id="labelmap-keeps-unmatched-text-of-an-unanchored-regex",
    ),
    pytest.param(
        {"ab": "1"},
        [{"regex": "a)|(b", "replacement": "X", "action": "labelmap"}],
        {"ab": "1", "XX": "1"},
        id="labelmap-replaces-every-match-like-go-replaceall",
    ),
]


@pytest.mark.parametrize(("labels", "rules", "expected"), PROMETHEUS_TABLE + TRAPS)
def test_apply(labels, rules, expected):
    """Applying the rules gives what Prometheus gives for the same labels."""
    assert program(*rules).apply(labels) == expected


def test_trace_names_the_rule_that_dropped():
    """trace lists each rule's output up to the rule that dropped the series, which shows as None."""
    rules = program(
        {"target_label": "env", "replacement": "prod"},
        {"source_labels": ("__name__",), "regex": "go_.*", "action": "drop"},
        {"target_label": "never", "replacement": "reached"},
    )
    assert rules.trace({"__name__": "go_goroutines"}) == [
        ("upstreams[0].metric_relabel_configs[0]", {"__name__": "go_goroutines", "env": "prod"}),
        ("upstreams[0].metric_relabel_configs[1]", None),
    ]


def test_empty_program_passes_labels_through():
    """With no rules the program is empty and returns a copy of the labels without empty values."""
    empty = program()
    labels = {"__name__": "up", "blank": ""}
    assert empty.is_empty
    result = empty.apply(labels)
    assert result == {"__name__": "up"}
    assert result is not labels


# --- validation --------------------------------------------------------------------------------------

# (fields, the field of the first problem or None when accepted, whether Prometheus 2.42 agrees)
VALIDATION = [
    pytest.param({}, "target_label", True, id="defaults-need-target"),
    pytest.param({"action": ""}, "action", True, id="empty-action"),
    pytest.param({"action": "rewrite"}, "action", True, id="unknown-action"),
    pytest.param({"action": "KeEp"}, None, True, id="case-insensitive-action"),
    pytest.param({"action": "hashmod", "target_label": "h"}, "modulus", True, id="hashmod-without-modulus"),
    pytest.param({"action": "hashmod", "target_label": "h", "modulus": 8}, None, True, id="hashmod-ok"),
    pytest.param({"action": "hashmod", "modulus": 8}, "target_label", True, id="hashmod-without-target"),
    pytest.param(
        {"action": "hashmod", "modulus": 8, "target_label": "${1}"},
        "target_label",
        True,
        id="hashmod-template-target",
    ),
    pytest.param({"target_label": "x"}, None, True, id="replace-ok"),
    pytest.param({"target_label": "-label"}, "target_label", True, id="replace-target-leading-dash"),
    pytest.param({"target_label": "0abc"}, "target_label", True, id="replace-target-leading-digit"),
    pytest.param({"target_label": "utf-8.label"}, "target_label", True, id="replace-target-utf8-name"),
    pytest.param({"target_label": "${1}"}, None, True, id="replace-target-braced-reference"),
    pytest.param({"target_label": "$1"}, None, True, id="replace-target-reference"),
    pytest.param({"target_label": "label${1}"}, None, True, id="replace-target-suffix-reference"),
    pytest.param({"target_label": "${1}label"}, None, True, id="replace-target-prefix-reference"),
    pytest.param({"target_label": "asd$2asd"}, None, True, id="replace-target-inner-reference"),
    pytest.param({"target_label": "_${1}_"}, None, True, id="replace-target-underscores"),
    pytest.param({"target_label": "foo${bar}foo"}, None, True, id="replace-target-named-reference"),
    pytest.param({"target_label": "${"}, "target_label", True, id="replace-target-open-brace"),
    pytest.param({"target_label": "$"}, "target_label", True, id="replace-target-lone-dollar"),
    pytest.param({"target_label": "${}"}, "target_label", True, id="replace-target-empty-braces"),
    pytest.param({"target_label": "foo${"}, "target_label", True, id="replace-target-trailing-brace"),
    pytest.param({"target_label": "-foo${1}bar-"}, "target_label", True, id="replace-target-dashes"),
    pytest.param({"target_label": "bar.foo${1}bar"}, "target_label", True, id="replace-target-dot"),
    pytest.param({"target_label": "0${3}"}, "target_label", True, id="replace-target-digit-then-reference"),
    pytest.param(
        {"target_label": "utf-8.label${1}"}, "target_label", True, id="replace-target-utf8-reference"
    ),
    pytest.param({"action": "lowercase"}, "target_label", True, id="lowercase-without-target"),
    pytest.param({"action": "lowercase", "target_label": "l"}, None, True, id="lowercase-ok"),
    pytest.param(
        {"action": "lowercase", "target_label": "${3}"}, "target_label", False, id="lowercase-template"
    ),
    pytest.param(
        {"action": "uppercase", "target_label": "$1"}, "target_label", False, id="uppercase-template"
    ),
    pytest.param(
        {"action": "keepequal", "target_label": "${1}"}, "target_label", False, id="keepequal-template"
    ),
    pytest.param(
        {"action": "lowercase", "target_label": "l", "replacement": "x"},
        "replacement",
        True,
        id="lowercase-replacement",
    ),
    pytest.param(
        {"action": "uppercase", "target_label": "u", "replacement": ""},
        "replacement",
        True,
        id="uppercase-replacement",
    ),
    pytest.param({"action": "keepequal"}, "target_label", True, id="keepequal-without-target"),
    pytest.param({"action": "dropequal", "target_label": "t"}, None, True, id="dropequal-ok"),
    pytest.param(
        {"action": "keepequal", "target_label": "t", "regex": "x"}, "regex", True, id="keepequal-with-regex"
    ),
    pytest.param(
        {"action": "dropequal", "target_label": "t", "separator": ","},
        "separator",
        True,
        id="dropequal-separator",
    ),
    pytest.param(
        {"action": "keepequal", "target_label": "t", "modulus": 2}, "modulus", True, id="keepequal-modulus"
    ),
    pytest.param(
        {"action": "dropequal", "target_label": "t", "replacement": "x"},
        "replacement",
        True,
        id="dropequal-replacement",
    ),
    pytest.param({"action": "labelmap"}, None, True, id="labelmap-default-replacement"),
    pytest.param({"action": "labelmap", "replacement": "${1}"}, None, True, id="labelmap-braced"),
    pytest.param(
        {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(strimzi_io_.+)"},
        None,
        True,
        id="labelmap-ok",
    ),
    pytest.param(
        {"action": "labelmap", "replacement": ""}, "replacement", True, id="labelmap-empty-replacement"
    ),
    pytest.param(
        {"action": "labelmap", "replacement": "a-$1"}, "replacement", True, id="labelmap-dash-replacement"
    ),
    pytest.param({"action": "labeldrop", "regex": "tmp_.*"}, None, True, id="labeldrop-ok"),
    pytest.param(
        {"action": "labeldrop", "source_labels": ("a",)}, "source_labels", True, id="labeldrop-source-labels"
    ),
    pytest.param({"action": "labelkeep", "target_label": "t"}, "target_label", True, id="labelkeep-target"),
    pytest.param({"action": "labelkeep", "separator": "/"}, "separator", True, id="labelkeep-separator"),
    pytest.param(
        {"action": "labeldrop", "replacement": "x"}, "replacement", True, id="labeldrop-replacement"
    ),
    pytest.param({"action": "labelkeep", "modulus": 1}, "modulus", True, id="labelkeep-modulus"),
    pytest.param(
        {"action": "keep", "source_labels": ("",)}, "source_labels[0]", True, id="empty-source-label-name"
    ),
    pytest.param({"action": "keep", "source_labels": ("a.b",)}, None, False, id="utf8-source-label-name"),
    pytest.param({"action": "keep", "regex": "(?<n>x)"}, None, False, id="regex-angle-named-group"),
    pytest.param({"action": "keep", "modulus": 2**64}, "modulus", False, id="modulus-beyond-64-bits"),
]

# (regex, accepted): what Go's regexp accepts, whatever RE2 alone would say.
REGEXES = [
    pytest.param("", True, id="empty"),
    pytest.param("(", False, id="unclosed-group"),
    pytest.param("a(?=b)", False, id="lookahead"),
    pytest.param("(?<=a)b", False, id="lookbehind"),
    pytest.param(r"(a)\1", False, id="backreference"),
    pytest.param("(?P<n>a)(?P=n)", False, id="named-backreference"),
    pytest.param(r"\C", False, id="any-byte-escape"),
    pytest.param("[\\C]", False, id="any-byte-escape-in-class"),
    pytest.param("(?P<é>a)", False, id="non-ascii-group-name"),
    pytest.param("(?P<1x>a)", True, id="group-name-leading-digit"),
    pytest.param("(?P<n>a)(?P<n>b)", True, id="repeated-group-name"),
    pytest.param("(?P<>a)", False, id="empty-group-name"),
    pytest.param("(?P<a-b>a)", False, id="dash-in-group-name"),
    pytest.param("x{1000}", True, id="repeat-1000"),
    pytest.param("x{1001}", False, id="repeat-1001"),
    pytest.param("x{1000000000}", False, id="repeat-a-billion"),
    pytest.param("x{1,99999999999}", False, id="repeat-max-overflows"),
    pytest.param("x{01}", True, id="repeat-with-leading-zero-is-literal"),
    pytest.param("x{,2}", True, id="repeat-without-min-is-literal"),
    pytest.param(r"\x{2000}", True, id="hex-escape-braces-not-a-repeat"),
    pytest.param(r"\Q{2000}\E", True, id="quoted-braces-not-a-repeat"),
    pytest.param("[x{2000}]", True, id="class-braces-not-a-repeat"),
    pytest.param("x{1000}{2}", False, id="nested-repeat"),
    pytest.param("x**", False, id="double-star"),
    pytest.param("(?x)a", False, id="extended-flag"),
    pytest.param("(?i)a(?U)b*(?s:.)(?m:^$)", True, id="go-flags"),
    pytest.param(r"\Z", False, id="python-end-anchor"),
    pytest.param(r"\z\A", True, id="go-text-anchors"),
    pytest.param(r"\p{Greek}\pN\p{^Han}", True, id="unicode-classes"),
    pytest.param(r"\p{Foo}", False, id="unknown-unicode-class"),
    pytest.param("[[:alpha:]][[:^digit:]]", True, id="posix-classes"),
    pytest.param("[[:foo:]]", False, id="unknown-posix-class"),
    pytest.param(r"\e", False, id="escape-e"),
    pytest.param(r"\8", False, id="escape-8"),
    pytest.param(r"\101", True, id="octal-escape"),
    pytest.param("a)|(b", True, id="unbalanced-but-balanced-once-wrapped"),
    pytest.param("x*+", False, id="possessive"),
]


@pytest.mark.parametrize(("fields", "refused_field", "agrees_with_242"), VALIDATION)
def test_validation(fields, refused_field, agrees_with_242):
    """A rule is refused, first at the field Prometheus' checks name, exactly when Prometheus refuses it."""
    del agrees_with_242  # only the promtool test needs it
    if refused_field is None:
        assert not program(fields).is_empty
    else:
        paths = refusal_paths(fields)
        assert paths[0] == f"upstreams[0].metric_relabel_configs[0].{refused_field}"


@pytest.mark.parametrize(("regex", "accepted"), REGEXES)
def test_regex_dialect(regex, accepted):
    """A regex compiles exactly when Go's regexp compiles it (RE2 syntax, Go's limits)."""
    rule = {"action": "keep", "regex": regex}
    if accepted:
        assert not program(rule).is_empty
    else:
        assert refusal_paths(rule) == ["upstreams[0].metric_relabel_configs[0].regex"]


def test_every_problem_of_every_rule_is_reported():
    """Compiling collects the problems of all rules, several per rule, before raising."""
    rules = specs(
        {"action": "hashmod"},
        {"target_label": "ok"},
        {"action": "labeldrop", "regex": "(", "separator": ","},
    )
    with pytest.raises(ConfigError) as caught:
        RelabelProgram.compile(rules, source="relay.yml")
    rendered = str(caught.value)
    assert [problem.path for problem in caught.value.problems] == [
        "upstreams[0].metric_relabel_configs[0].modulus",
        "upstreams[0].metric_relabel_configs[0].target_label",
        "upstreams[0].metric_relabel_configs[2].regex",
        "upstreams[0].metric_relabel_configs[2].separator",
    ]
    assert "relay.yml: upstreams[0].metric_relabel_configs[0].modulus: hashmod needs a modulus" in rendered
    assert "labeldrop uses only regex" in rendered


def prometheus_rule(fields: Fields) -> Fields:
    """The YAML of a rule as Prometheus reads it (lists for tuples)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in fields.items()}


def promtool_accepts(tmp_path: Path, promtool: str, fields: Fields) -> tuple[bool, str]:
    """Whether `promtool check config` accepts a scrape job carrying the one rule, and what it said."""
    config = {
        "scrape_configs": [
            {
                "job_name": "relabel-check",
                "static_configs": [{"targets": ["localhost:9"]}],
                "metric_relabel_configs": [prometheus_rule(fields)],
            }
        ]
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(path)], capture_output=True, text=True, check=False
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def agreed_cases() -> list[Any]:
    """Validation and regex cases where current Prometheus and 2.42 agree, as promtool-checkable rules."""
    cases = [
        pytest.param(fields, refused is None, id=param.id)
        for param in VALIDATION
        for fields, refused, agrees in [param.values]
        if agrees
    ]
    cases += [
        pytest.param({"action": "keep", "regex": regex}, accepted, id=f"regex-{param.id}")
        for param in REGEXES
        for regex, accepted in [param.values]
    ]
    return cases


@pytest.mark.peer
@pytest.mark.parametrize(("fields", "accepted"), agreed_cases())
def test_promtool_agrees(tmp_path, fields, accepted):
    """promtool check config accepts exactly the rules the relay accepts (where 2.42 and 3.x agree)."""
    promtool = require_tool("promtool")
    promtool_ok, said = promtool_accepts(tmp_path, promtool, fields)
    assert promtool_ok == accepted, said
    try:
        program(fields)
    except ConfigError:
        relay_ok = False
    else:
        relay_ok = True
    assert relay_ok == promtool_ok, said


# --- properties --------------------------------------------------------------------------------------

NAMES = ("__name__", "a", "b", "job", "le", "x_1")
REGEX_POOL = ("(.*)", "", "a.*", "(a|b)(.*)", ".+_total", "(?P<n>[a-z]+)_(\\d+)", "b", "(x)?", "(?s:.)*\n?")
names = st.sampled_from(NAMES)
source_labels = st.lists(names, max_size=3).map(tuple)


@st.composite
def rule_fields(draw: st.DrawFn) -> Fields:
    """A valid rule of any action, with fields drawn from small pools that exercise the interesting paths."""
    action = draw(st.sampled_from(ACTIONS))
    fields: Fields = {"action": draw(st.sampled_from((action, action.upper(), action.title())))}
    regex = draw(st.sampled_from(REGEX_POOL))
    if action in ("keep", "drop", "replace"):
        fields |= {
            "source_labels": draw(source_labels),
            "regex": regex,
            "separator": draw(st.sampled_from(";,")),
        }
    if action == "replace":
        fields["target_label"] = draw(st.sampled_from(("d", "a", "__name__", "$1", "${n}_x", "$2$1")))
        fields["replacement"] = draw(st.sampled_from(("$1", "", "v", "${n}-$2", "$$", "$1x")))
    if action in ("keepequal", "dropequal", "lowercase", "uppercase", "hashmod"):
        fields |= {"source_labels": draw(source_labels), "target_label": draw(names)}
    if action == "hashmod":
        fields["modulus"] = draw(st.integers(1, 2**64 - 1))
    if action == "labelmap":
        fields |= {"regex": regex, "replacement": draw(st.sampled_from(("$1", "m_${1}", "x", "${n}_$2")))}
    if action in ("labeldrop", "labelkeep"):
        fields["regex"] = regex
    return fields


label_sets = st.dictionaries(
    st.one_of(names, st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)),
    st.one_of(st.just(""), st.sampled_from(("a", "b_total", "x_12", "ab")), st.text(max_size=8)),
    max_size=6,
)


@settings(deadline=None)
@given(rules=st.lists(rule_fields(), max_size=5), labels=label_sets)
def test_apply_is_pure_and_leaves_no_empty_values(rules, labels):
    """apply never changes its input, never returns an empty value or set, and gives the same answer twice."""
    compiled = program(*rules)
    before = copy.deepcopy(labels)
    first = compiled.apply(labels)
    assert labels == before
    assert first is None or (first and all(value for value in first.values()))
    assert compiled.apply(labels) == first


@settings(deadline=None)
@given(rules=st.lists(rule_fields(), min_size=1, max_size=5), labels=label_sets)
def test_trace_agrees_with_apply(rules, labels):
    """The last step of a trace is what apply returns (a dropped or emptied series is None)."""
    compiled = program(*rules)
    last = compiled.trace(labels)[-1][1]
    assert (last or None) == compiled.apply(labels)


@settings(deadline=None)
@given(value=st.text(max_size=20), modulus=st.integers(1, 2**64 - 1))
def test_hashmod_is_within_modulus(value, modulus):
    """hashmod always writes a decimal number from 0 to modulus - 1."""
    rule = {"source_labels": ("v",), "action": "hashmod", "target_label": "h", "modulus": modulus}
    result = program(rule).apply({"v": value})
    assert result is not None
    assert 0 <= int(result["h"]) < modulus


@settings(deadline=None)
@given(literal=st.text(min_size=1, max_size=10), value=st.text(min_size=1, max_size=10))
def test_regex_is_fully_anchored(literal, value):
    """An escaped literal regex keeps a value exactly when the whole value equals the literal."""
    rule = {"source_labels": ("v",), "action": "keep", "regex": re2.escape(literal)}
    assert (program(rule).apply({"v": value}) is not None) == (value == literal)


# Prometheus' own pattern for a legacy label name with $ references (relabelTargetLegacy), as the oracle.
PROMETHEUS_TARGET_PATTERN = r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$"


@settings(deadline=None)
@given(target=st.from_regex(r"[a-z_0-9${}.\-]{0,8}\$[a-z_0-9${}.\-]{0,8}", fullmatch=True))
def test_replace_target_templates_match_prometheus_pattern(target):
    """A replace target with `$` is accepted exactly when Prometheus' legacy target pattern matches it."""
    expected = re2.search(PROMETHEUS_TARGET_PATTERN, target) is not None
    try:
        program({"target_label": target})
    except ConfigError:
        accepted = False
    else:
        accepted = True
    assert accepted == expected


@pytest.mark.parametrize(
    ("name", "valid"),
    [("a", True), ("_", True), ("__name__", True), ("a1", True), ("1a", False), ("", False), ("a.b", False)],
)
def test_is_valid_label_name(name, valid):
    """Legacy label names: letters, digits and '_', not starting with a digit."""
    assert is_valid_label_name(name) is valid


def test_results_stay_right_past_the_per_rule_memo():
    """Rules remember results per label name; more distinct names than the memo holds change no answer."""
    keep_even = program(
        {"regex": "n[0-9]*[02468]", "action": "labelkeep"}, {"regex": "n(.*)", "action": "labelmap"}
    )
    for round_ in range(2):
        for number in range(0, 6000, 7):
            result = keep_even.apply({f"n{number}": str(round_ + 1)})
            if number % 2:
                assert result is None
            else:
                assert result == {f"n{number}": str(round_ + 1), str(number): str(round_ + 1)}
