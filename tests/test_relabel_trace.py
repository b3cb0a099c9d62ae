"""One series' trace through the rules: the forms a series is given in, each step, and the verdict."""

from __future__ import annotations

import pytest

from relay.relabel_trace import parse_series_argument, render_trace, trace_json, trace_series
from tests.test_relabel_report import KUBE_RULES, rules_for


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ('a{b="c"}', {"__name__": "a", "b": "c"}),
        ('{__name__="a",b="c"}', {"__name__": "a", "b": "c"}),
        ('{ b="c" , __name__="a" }', {"__name__": "a", "b": "c"}),
        ('{__name__="a"}', {"__name__": "a"}),
        ("a", {"__name__": "a"}),
        ('a{b="c"} 12', {"__name__": "a", "b": "c"}),
        ('a{b="c"} 12 1700000000000', {"__name__": "a", "b": "c"}),
        ('a_total{b="c"} 1 1700000000.5 # {trace_id="x"} 1', {"__name__": "a_total", "b": "c"}),
        ('  a{b="x\\"}y"}  +Inf  ', {"__name__": "a", "b": 'x"}y'}),
        ('{"my.metric", b="c"}', {"__name__": "my.metric", "b": "c"}),
    ],
)
def test_series_argument_forms(text, labels):
    """A series is accepted as written in an exposition, with __name__ inside the braces, or as a line."""
    assert parse_series_argument(text)[1] == labels


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a series"),
        ("12", "expected a series"),
        ("a{b=c}", "expected a quoted label value"),
        ('a{__name__="b"}', "the metric name is given twice"),
        ('a{b="c"} twelve', "after the series, expected a value"),
        ('a{b="c"} 1 2 3', "after the series, expected a value"),
    ],
)
def test_series_argument_errors(text, message):
    """A series that cannot be read is refused with what is wrong."""
    with pytest.raises(ValueError, match=message):
        parse_series_argument(text)


def trace_of(rules_yaml: str, text: str) -> dict:
    rules = rules_for(rules_yaml)
    return trace_json(trace_series(rules, *parse_series_argument(text)))


@pytest.mark.parametrize(
    ("rules_yaml", "text", "verdict", "dropped_by", "steps"),
    [
        pytest.param(
            KUBE_RULES,
            'apiserver_request_total{verb="LIST"} 3',
            'kept as {__name__="apiserver_request_total", verb="LIST", cluster="one", verb_class="read"}',
            None,
            5,
            id="kept",
        ),
        pytest.param(KUBE_RULES, "go_goroutines 12", "dropped by rule 4 (drop)", 4, 5, id="dropped last"),
        pytest.param(
            KUBE_RULES,
            '{__name__="etcd_request_duration_seconds_bucket",le="1"}',
            "dropped by rule 1 (drop)",
            1,
            2,
            id="dropped early",
        ),
        pytest.param(
            "    metric_relabel_configs:\n      - {target_label: __name__, replacement: '1x'}\n",
            "a",
            'kept as {__name__="1x"}, but not relayed: it has no valid metric name after relabeling',
            None,
            1,
            id="not relayed",
        ),
        pytest.param("", 'a{b="c"}', 'kept as {__name__="a", b="c"}', None, 0, id="no rules"),
    ],
)
def test_trace_verdicts(rules_yaml, text, verdict, dropped_by, steps):
    """The trace ends with the verdict: kept as the final labels, or dropped by the rule that did it."""
    trace = trace_of(rules_yaml, text)
    assert (trace["verdict"], trace["dropped_by"], len(trace["steps"])) == (verdict, dropped_by, steps)


def test_trace_shows_each_rule_before_and_after():
    """Each step has the rule's index, action, location, and the labels before and after it."""
    trace = trace_of(KUBE_RULES, 'apiserver_request_total{verb="LIST"}')
    step = trace["steps"][2]
    assert (step["index"], step["action"], step["location"]) == (
        2,
        "replace",
        "upstreams[0].metric_relabel_configs[2]",
    )
    assert step["before"] == {"__name__": "apiserver_request_total", "verb": "LIST"}
    assert step["after"] == {"__name__": "apiserver_request_total", "verb": "LIST", "cluster": "one"}
    assert step["changed"] is True
    assert trace["steps"][0]["changed"] is False


def test_trace_text():
    """The text trace names every rule reached, what it did, and the verdict."""
    rules = rules_for(KUBE_RULES)
    text = render_trace(
        trace_series(rules, *parse_series_argument('{__name__="etcd_request_duration_seconds_bucket"}'))
    )
    assert text.splitlines() == [
        "upstream test: 5 rule(s)",
        'series   {__name__="etcd_request_duration_seconds_bucket"}',
        "rule 0   drop      upstreams[0].metric_relabel_configs[0] (line 5)",
        "         unchanged",
        "rule 1   drop      upstreams[0].metric_relabel_configs[1] (line 8)",
        "         dropped",
        "         (3 later rule(s) not reached)",
        "verdict  dropped by rule 1 (drop)",
    ]
