"""The relabel report: per-rule counts over a body, how it reads and how it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import pipeline
from relay.config import parse
from relay.errors import InvalidExpositionError, LimitExceededError
from relay.relabel_report import BodySummarizer, render_summary, summary_json
from relay.rules import Rules
from tests.support import config_yaml, require_fixtures

# kube-prometheus-style rules: drop heavy buckets and deprecated families, label every series, rename a verb.
KUBE_RULES = """\
    metric_relabel_configs:
      - source_labels: [__name__, le]
        regex: 'apiserver_request_(sli_)?duration_seconds_bucket;(0\\.005|0\\.025|0\\.6|0\\.8|1\\.25|1\\.5)'
        action: drop
      - source_labels: [__name__]
        regex: 'etcd_request_duration_seconds_bucket|apiserver_request_slo_duration_seconds_.*'
        action: drop
      - target_label: cluster
        replacement: one
      - source_labels: [verb]
        regex: 'LIST|WATCH'
        target_label: verb_class
        replacement: read
      - source_labels: [__name__]
        regex: 'go_.*'
        action: drop
"""


def rules_for(rules_yaml: str, extra: str = "") -> Rules:
    """The compiled rules of a one-upstream configuration with these metric_relabel_configs."""
    text = config_yaml("https://127.0.0.1:1/metrics", extra=rules_yaml + extra)
    return Rules.for_upstream(parse(text, source="relay.yml", base_dir=Path()).upstreams[0])


def summarize(rules: Rules, body: bytes, *, chunk: int = 1 << 16, openmetrics: bool = False) -> dict:
    summarizer = BodySummarizer(rules, openmetrics=openmetrics)
    for start in range(0, len(body), chunk):
        summarizer.feed(body[start : start + chunk])
    return summary_json(summarizer.finish())


def relabel_with_engine(rules: Rules, body: bytes, openmetrics: bool, engine: str) -> pipeline.BodyRelabeler:
    """The body through the relay's own line engine, in the same chunks as summarize()."""
    relabeler = pipeline.body_relabeler(rules, openmetrics=openmetrics, engine=engine)
    for start in range(0, len(body), 1 << 16):
        relabeler.feed(body[start : start + (1 << 16)])
    relabeler.finish()
    return relabeler


def counts(summary: dict) -> list[tuple[int, int, int, int]]:
    return [
        (rule["samples_in"], rule["samples_out"], rule["dropped"], rule["changed"])
        for rule in summary["rules"]
    ]


BODY = b"""\
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{verb="GET",code="200"} 10
http_requests_total{verb="LIST",code="200"} 3 1700000000000
http_requests_total{verb="WATCH",code="500"} 1
go_goroutines 12
process_open_fds{}  7
"""


@pytest.mark.parametrize(
    ("rules_yaml", "extra", "expected_counts", "dropped"),
    [
        pytest.param("", "", [], {}, id="no rules"),
        pytest.param(
            KUBE_RULES,
            "",
            [(5, 5, 0, 0), (5, 5, 0, 0), (5, 5, 0, 5), (5, 5, 0, 2), (5, 4, 1, 0)],
            {"relabel": 1},
            id="kube-prometheus style",
        ),
        pytest.param(
            "    metric_relabel_configs:\n"
            "      - {source_labels: [verb], regex: WATCH, target_label: verb, replacement: LIST}\n"
            "      - {source_labels: [verb], regex: LIST, action: drop}\n",
            "",
            [(5, 5, 0, 1), (5, 3, 2, 0)],
            {"relabel": 2},
            id="changed by one rule, dropped by the next",
        ),
        pytest.param(
            "    metric_relabel_configs:\n      - {regex: 'verb|code', action: labeldrop}\n",
            "",
            [(5, 5, 0, 3)],
            {"duplicate": 2},
            id="series made equal are duplicates",
        ),
        pytest.param(
            "    metric_relabel_configs:\n"
            "      - {source_labels: [verb], regex: GET, target_label: __name__, replacement: ''}\n",
            "",
            [(5, 5, 0, 1)],
            {"invalid_name": 1},
            id="a rule that removes the name",
        ),
        pytest.param(
            "    metric_relabel_configs:\n      - {regex: '.*', action: labeldrop}\n",
            "",
            [(5, 0, 5, 0)],
            {"relabel": 5},
            id="no label left counts as dropped",
        ),
    ],
)
def test_summary_counts_each_rule(rules_yaml, extra, expected_counts, dropped):
    """Each rule's samples in and out, drops and changes, and the body's totals by reason."""
    summary = summarize(rules_for(rules_yaml, extra), BODY)
    assert counts(summary) == expected_counts
    assert summary["dropped"] == dropped
    assert (summary["samples_in"], summary["samples_out"]) == (5, 5 - sum(dropped.values()))


def test_summary_names_the_families_most_affected():
    """A rule lists the families whose samples it dropped or changed, most first."""
    summary = summarize(rules_for(KUBE_RULES), BODY)
    families = [rule["families"] for rule in summary["rules"]]
    assert families[3] == [{"name": "http_requests_total", "dropped": 0, "changed": 2}]
    assert families[4] == [{"name": "go_goroutines", "dropped": 1, "changed": 0}]
    assert families[2][0] == {"name": "http_requests_total", "dropped": 0, "changed": 3}


def test_summary_json_has_the_interface_fields():
    """The JSON object carries INTERFACE.md's fields, with each rule's index, action and location."""
    summary = summarize(rules_for(KUBE_RULES), BODY)
    assert {"upstream", "samples_in", "samples_out", "rules"} <= summary.keys()
    first = summary["rules"][0]
    assert {"index", "action", "samples_in", "samples_out", "dropped", "changed"} <= first.keys()
    assert (first["index"], first["action"], first["location"]) == (
        0,
        "drop",
        "upstreams[0].metric_relabel_configs[0]",
    )
    assert first["line"] == 5


def test_a_body_read_byte_by_byte_gives_the_same_summary():
    """Chunk boundaries anywhere (inside a line, a raw newline in a quoted value) do not change the counts."""
    body = BODY + b'multi_line{text="a\nb",verb="LIST"} 1\nlast_line_without_newline{verb="LIST"} 2'
    rules = rules_for(KUBE_RULES)
    whole = summarize(rules, body, chunk=len(body))
    assert whole == summarize(rules_for(KUBE_RULES), body, chunk=1)
    assert whole["samples_in"] == 7


def test_openmetrics_body_with_exemplars():
    """An OpenMetrics body is read with its exemplars and `# EOF`."""
    body = (
        b"# TYPE rpc_seconds histogram\n"
        b'rpc_seconds_bucket{le="1"} 3 # {trace_id="abc"} 0.5 1700000000.5\n'
        b'rpc_seconds_bucket{le="+Inf"} 4\nrpc_seconds_count 4\nrpc_seconds_sum 2.5 1700000000.25\n# EOF\n'
    )
    rules = rules_for(
        "    metric_relabel_configs:\n      - {source_labels: [le], regex: '1', action: drop}\n"
    )
    summary = summarize(rules, body, openmetrics=True)
    assert counts(summary) == [(4, 3, 1, 0)]
    assert summary["format"] == "openmetrics"


@pytest.mark.parametrize(
    ("body", "openmetrics", "error", "message"),
    [
        pytest.param(
            b"a 1\nb{c=d} 2\n",
            False,
            InvalidExpositionError,
            r"at line 2 \(byte 4\), family b:",
            id="bad label value",
        ),
        pytest.param(b"a 1\nb 1_000\n", False, InvalidExpositionError, "at line 2", id="Go float syntax"),
        pytest.param(b"# TYPE a nonsense\na 1\n", False, InvalidExpositionError, "at line 1", id="bad TYPE"),
        pytest.param(b"a 1\n", True, InvalidExpositionError, "without # EOF", id="OpenMetrics without EOF"),
        pytest.param(b"a 1\n# EOF\nb 2\n", True, InvalidExpositionError, "at line 3", id="after EOF"),
        pytest.param(
            b"a 1\n" + b"b" * 300 + b" 1\n",
            False,
            LimitExceededError,
            "at line 2 .* line_length_limit",
            id="long",
        ),
    ],
)
def test_invalid_bodies_fail_with_the_line(body, openmetrics, error, message, engine):
    """An invalid line stops the summary with the error the relay's engine gives, which says where it is."""
    with pytest.raises(error, match=message) as ours:
        summarize(rules_for("", "    line_length_limit: 200\n"), body, openmetrics=openmetrics)
    with pytest.raises(error) as engines:
        relabel_with_engine(rules_for("", "    line_length_limit: 200\n"), body, openmetrics, engine)
    assert ours.value.message == engines.value.message


@pytest.mark.parametrize("chunk", [1, 7, 1 << 16])
def test_a_continued_sample_is_named_by_its_first_line(chunk):
    """A sample that a raw newline continues is named by its first line, wherever the chunks are cut."""
    body = b'a 1\nb{c="x\ny"} 1_000\n'
    with pytest.raises(
        InvalidExpositionError, match=r"at line 2 \(byte 4\), family b: .* in 'b\{c=\"x\\ny\"\} 1_000'"
    ):
        summarize(rules_for(""), body, chunk=chunk)


def test_invalid_lines_are_counted_when_the_upstream_drops_them():
    """With `on_invalid_line: drop` invalid sample lines are counted as left out, not an error."""
    rules = rules_for(KUBE_RULES, "    on_invalid_line: drop\n")
    summary = summarize(rules, BODY + b"bad{x=y} 1\nworse 1_000\n")
    assert summary["dropped"] == {"invalid_line": 2, "relabel": 1}
    assert summary["rules"][0]["samples_in"] == 5
    assert summary["samples_in"] == 7


def test_a_limit_the_rules_break_is_a_warning():
    """A series over label_limit after the rules makes the summary warn that the relay would fail."""
    summary = summarize(rules_for(KUBE_RULES, "    label_limit: 3\n"), BODY)
    assert summary["warnings"] == [
        "the relay would fail this scrape: a series has 4 labels, more than label_limit (3)"
    ]


@pytest.mark.fixtures
@pytest.mark.parametrize(
    ("file", "openmetrics"),
    [
        ("kube-apiserver-1.35-minikube.prom", False),
        ("kube-controller-manager-1.35-minikube.prom", False),
        ("prometheus-alltypes.237mfs.prom.txt", False),
        ("openmetrics-alltypes.5mfs.om.txt", True),
    ],
)
@pytest.mark.parametrize(
    "rules_yaml",
    [
        pytest.param(KUBE_RULES, id="kube-prometheus"),
        pytest.param(
            KUBE_RULES + "      - {regex: 'code|resource|group', action: labeldrop}\n", id="duplicates"
        ),
    ],
)
def test_totals_agree_with_the_line_engine_on_the_fixtures(file, openmetrics, rules_yaml, engine):
    """The summary's totals are what the relay's engine relays and drops, by reason, on real bodies."""
    body = (require_fixtures() / file).read_bytes()
    summary = summarize(rules_for(rules_yaml), body, openmetrics=openmetrics)
    relabeler = relabel_with_engine(rules_for(rules_yaml), body, openmetrics, engine)
    assert (summary["samples_in"], summary["samples_out"]) == (relabeler.samples_in, relabeler.samples_out)
    assert summary["dropped"] == {reason: count for reason, count in relabeler.dropped.items() if count}
    assert sum(rule["dropped"] for rule in summary["rules"]) == summary["dropped"].get("relabel", 0)


def test_text_summary_is_a_table():
    """The text form has a header, one row per rule and each rule's families with its location."""
    rules = rules_for(KUBE_RULES)
    summarizer = BodySummarizer(rules)
    summarizer.feed(BODY)
    text = render_summary(summarizer.finish())
    lines = text.splitlines()
    assert lines[0] == "upstream test: 5 samples in, 4 out"
    assert lines[1] == "left out: 1 dropped by the rules"
    assert lines[3].split() == ["rule", "action", "samples", "in", "samples", "out", "dropped", "changed"]
    assert lines[8].split() == ["4", "drop", "5", "4", "1", "0"]
    assert "rule 4 (drop), upstreams[0].metric_relabel_configs[4] (line 17):" in lines
    assert "  1 dropped  go_goroutines" in lines


# --- one series --------------------------------------------------------------------------------------------
