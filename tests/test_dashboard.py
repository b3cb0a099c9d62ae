"""deploy/grafana/metrics-relay.json: its structure, its queries' metric names, and its queries run on a real
Prometheus that scrapes a real relay."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.prometheus_oracle import OracleError
from tests.promql import exposed_names, metric_names
from tests.relay_under_prometheus import RATE_INTERVAL_SECONDS, UPSTREAM_NAME, relay_under_prometheus

DASHBOARD_PATH = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "metrics-relay.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
UPSTREAM_VARIABLE_QUERY = "label_values(metrics_relay_upstream_up, upstream)"
# Grafana 11 writes 39; current releases write more and migrate older models when they load them.
OLDEST_SCHEMA_VERSION = 39
GRID_COLUMNS = 24
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

RATE_INTERVAL = f"{round(RATE_INTERVAL_SECONDS)}s"


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included, in order."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(all_panels(panel.get("panels", [])))
    return found


PANELS = all_panels(DASHBOARD["panels"])
QUERY_PANELS = [panel for panel in PANELS if panel["type"] != "row"]


@dataclass(frozen=True)
class Query:
    """One target of one panel: where it is, and its PromQL as written."""

    panel: str
    ref_id: str
    expr: str

    @property
    def key(self) -> str:
        """`panel title/refId`, for test ids and messages."""
        return f"{self.panel}/{self.ref_id}"


QUERIES = [
    Query(panel["title"], target["refId"], target["expr"])
    for panel in QUERY_PANELS
    for target in panel["targets"]
]


def substituted(expr: str, upstream: str = UPSTREAM_NAME) -> str:
    """The query as Grafana sends it for one selected upstream; fails on a variable Grafana would not fill."""
    # A selected value goes into a regex matcher: escaped for the regex, then for the PromQL string.
    values = {"upstream": re.escape(upstream).replace("\\", "\\\\"), "__rate_interval": RATE_INTERVAL}

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        assert name in values, f"unknown template variable ${name} in {expr!r}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def variable(name: str) -> dict[str, Any]:
    """The dashboard's template variable called `name`."""
    found = [item for item in DASHBOARD["templating"]["list"] if item["name"] == name]
    assert len(found) == 1, f"expected one template variable {name}, found {len(found)}"
    return found[0]


# --- the metric-name extraction the checks below rely on -------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('rate(a_total{job="x", le=~"0.1|1"}[5m])', {"a_total"}),
        ("sum by (le, upstream) (rate(b_bucket[1m]))", {"b_bucket"}),
        ("sum(rate(c_total[5m])) without (instance)", {"c_total"}),
        ("topk by (job) (3, d)", {"d"}),
        ("e / ignoring (reason) group_left f", {"e", "f"}),
        ("g * on (job, instance) group_left (version) h", {"g", "h"}),
        ("i > bool 1e3 and j offset 5m or k @ start() unless l", {"i", "j", "k", "l"}),
        ("m - time() < 7 * 86400 > 0x10", {"m"}),
        ("histogram_quantile(0.99, sum by (le) (rate(n[1h30m:1m])))", {"n"}),
        ('label_replace(o, "dst", "$1", "src", "(by|sum)")', {"o"}),
        ('{__name__="p", job="q"}', {"p"}),
        ('{"utf8.name", job="r"}', {"utf8.name"}),
        ("absent(s) # not_a_metric\n", {"s"}),
        ("vector(1) + Inf - NaN", set()),
        ("by_name + sum_total", {"by_name", "sum_total"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]):
    """Only selected metric names come out: no functions, keywords, label names, numbers or strings."""
    assert metric_names(expr) == names


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('{__name__=~"metrics_relay_.*"}', "matched by a pattern"),
        ("a | b", "cannot read PromQL at offset 2"),
        (r'{__name__="a\u0062"}', "escape sequences"),
    ],
)
def test_unreadable_promql_is_refused(expr: str, message: str):
    """An expression whose metric names cannot be known is an error naming why."""
    with pytest.raises(ValueError, match=re.escape(message)):
        metric_names(expr)


# --- the dashboard's structure ----------------------------------------------------------------------------


def test_dashboard_is_a_current_grafana_model():
    """The model has a uid, a title and a schemaVersion of a current Grafana, and no fixed numeric id."""
    assert DASHBOARD["uid"] == "metrics-relay"
    assert DASHBOARD["title"]
    assert DASHBOARD["schemaVersion"] >= OLDEST_SCHEMA_VERSION
    assert DASHBOARD.get("id") is None


def test_dashboard_has_datasource_and_upstream_variables():
    """`datasource` picks a Prometheus data source; `upstream` lists the relay's upstreams from it."""
    datasource = variable("datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    upstream = variable("upstream")
    assert upstream["type"] == "query"
    assert upstream["datasource"] == DATASOURCE
    assert upstream["definition"] == UPSTREAM_VARIABLE_QUERY
    assert upstream["query"]["query"] == UPSTREAM_VARIABLE_QUERY
    assert upstream["multi"] is True
    assert upstream["includeAll"] is True


def test_panel_ids_are_unique():
    """Every panel, rows included, has its own id."""
    ids = [panel["id"] for panel in PANELS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("panel", QUERY_PANELS, ids=[panel["title"] for panel in QUERY_PANELS])
def test_panel_queries_the_selected_datasource(panel: dict[str, Any]):
    """Each panel has targets with PromQL and distinct refIds, all on the `datasource` variable."""
    targets = panel["targets"]
    assert targets
    assert panel["datasource"] == DATASOURCE
    assert all(target["datasource"] == DATASOURCE and target["expr"].strip() for target in targets)
    ref_ids = [target["refId"] for target in targets]
    assert len(ref_ids) == len(set(ref_ids))


def test_panels_fit_the_grid_without_overlapping():
    """Panels stay within Grafana's 24 columns and no two cover the same cell."""
    cells: dict[tuple[int, int], str] = {}
    for panel in PANELS:
        position = panel["gridPos"]
        assert position["x"] >= 0
        assert position["w"] > 0
        assert position["x"] + position["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(position["x"], position["x"] + position["w"]):
            for y in range(position["y"], position["y"] + position["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[x, y]}"
                cells[x, y] = panel["title"]


def test_dashboard_covers_the_operators_questions():
    """Some query reads each metric family the operator's view needs."""
    used = set().union(*(metric_names(substituted(query.expr)) for query in QUERIES))
    wanted = {
        "metrics_relay_upstream_up",
        "metrics_relay_scrapes_total",
        "metrics_relay_scrape_failures_total",
        "metrics_relay_scrapes_aborted_total",
        "metrics_relay_scrape_duration_seconds_bucket",
        "metrics_relay_upstream_request_duration_seconds_bucket",
        "metrics_relay_samples_received_total",
        "metrics_relay_samples_relayed_total",
        "metrics_relay_samples_dropped_total",
        "metrics_relay_relabel_cache_entries",
        "metrics_relay_relabel_cache_misses_total",
        "metrics_relay_relayed_bytes_total",
        "metrics_relay_upstream_received_bytes_total",
        "metrics_relay_upstream_decompressed_bytes_total",
        "metrics_relay_client_certificate_expiry_timestamp_seconds",
        "metrics_relay_ca_certificate_expiry_timestamp_seconds",
        "metrics_relay_credentials_rotation_refused",
        "metrics_relay_config_last_reload_successful",
        "metrics_relay_process_resident_memory_bytes",
        "metrics_relay_process_cpu_seconds_total",
    }
    assert wanted - used == set()


@pytest.mark.parametrize("query", QUERIES, ids=[query.key for query in QUERIES])
def test_query_uses_only_metrics_the_relay_exposes(query: Query):
    """Each query selects at least one metric, and only ones a real SelfMetrics registry exposes."""
    used = metric_names(substituted(query.expr))
    assert used, f"{query.key} selects no metric"
    assert used - exposed_names() == set(), f"{query.key}: {query.expr}"


# --- the queries on a real Prometheus that scrapes a real relay -------------------------------------------


@dataclass(frozen=True)
class LiveAnswers:
    """Prometheus' answers: per query key an error (or None) and a series count; the variable's values."""

    queries: dict[str, tuple[str | None, int]]
    upstream_values: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tmp_path_factory) -> LiveAnswers:
    """Every dashboard query run as Grafana runs it, over the last seconds of a relay under Prometheus."""
    async with relay_under_prometheus(tmp_path_factory.mktemp("dashboard")) as running:
        prometheus = running.prometheus
        end = time.time()
        range_parameters = {"start": f"{end - 10:.3f}", "end": f"{end:.3f}", "step": "1"}
        answers: dict[str, tuple[str | None, int]] = {}
        for query in QUERIES:
            try:
                data = await prometheus.api("query_range", query=substituted(query.expr), **range_parameters)
            except OracleError as exc:
                answers[query.key] = (str(exc), 0)
            else:
                answers[query.key] = (None, len(data["result"]))
        values = await prometheus.api("label/upstream/values", **{"match[]": "metrics_relay_upstream_up"})
    return LiveAnswers(answers, values)


@pytest.mark.peer
@pytest.mark.timeout(120)
@pytest.mark.parametrize("query", QUERIES, ids=[query.key for query in QUERIES])
def test_query_answers_on_prometheus_scraping_a_relay(live: LiveAnswers, query: Query):
    """Prometheus runs the query (for one selected upstream) without error and finds series for it."""
    error, series = live.queries[query.key]
    assert error is None, f"{query.key}: {error}"
    assert series > 0, f"{query.key} finds no series: {substituted(query.expr)}"


@pytest.mark.peer
@pytest.mark.timeout(120)
def test_upstream_variable_lists_the_relayed_upstream(live: LiveAnswers):
    """The `upstream` variable's query finds the configured upstream on the relay's metrics."""
    assert live.upstream_values == [UPSTREAM_NAME]
