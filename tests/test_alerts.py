"""deploy/alerts.yaml: promtool accepts it, its unit tests cover every alert, it uses only real names."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus_oracle import SYNTHETIC_NAMES, Prometheus
from tests.promql import exposed_names, metric_names, tokens
from tests.relay_under_prometheus import UPSTREAM_NAME, relay_under_prometheus
from tests.support import body_handler, require_tool

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ALERTS = DEPLOY / "alerts.yaml"
ALERTS_TEST = DEPLOY / "alerts_test.yaml"
SEVERITIES = {"critical", "warning"}
# Series about the relay as a whole; every other metric the alerts use is per upstream.
RELAY_LEVEL_METRICS = {"up", "metrics_relay_build_info", "metrics_relay_config_last_reload_successful"}


def alerting_rules() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/alerts.yaml, in order."""
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the peer promtool in deploy/ (where the unit tests name their rule file)."""
    return subprocess.run(
        [require_tool("promtool"), *arguments],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        check=False,
    )


RULES = alerting_rules()
RULE_IDS = [rule["alert"] for rule in RULES]


@pytest.mark.peer
@pytest.mark.parametrize(
    "arguments",
    [("check", "rules", ALERTS.name), ("test", "rules", ALERTS_TEST.name)],
    ids=["check rules", "test rules"],
)
def test_promtool_accepts_the_rules_and_their_unit_tests(arguments: tuple[str, ...]):
    """`promtool check rules alerts.yaml` and `promtool test rules alerts_test.yaml` both succeed."""
    result = promtool(*arguments)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_fire_and_silence_every_alert():
    """alerts_test.yaml has, for each alert, a case where it fires and one where it does not."""
    document = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    assert document["rule_files"] == [ALERTS.name]
    cases = [case for test in document["tests"] for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    silent = {case["alertname"] for case in cases if not case["exp_alerts"]}
    names = set(RULE_IDS)
    assert (names - fired, names - silent) == (set(), set())
    assert (fired | silent) <= names, "unit tests name alerts that alerts.yaml does not have"


def test_alert_names_are_unique():
    """No two alerting rules share a name."""
    assert len(RULE_IDS) == len(set(RULE_IDS))


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_alert_uses_only_metrics_the_relay_exposes(rule: dict[str, Any]):
    """Every metric an alert selects is on a real SelfMetrics registry, or is Prometheus' own per target."""
    used = metric_names(rule["expr"])
    assert used, f"{rule['alert']} selects no metric"
    unknown = used - exposed_names() - SYNTHETIC_NAMES
    assert not unknown, f"{rule['alert']} uses metrics the relay does not expose: {sorted(unknown)}"


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_alert_is_labelled_and_explained(rule: dict[str, Any]):
    """Each alert has a severity, a `for:`, and annotations naming the upstream and reason it is about."""
    assert rule["labels"]["severity"] in SEVERITIES
    assert "for" in rule
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description"}
    selected = metric_names(rule["expr"])
    if selected - RELAY_LEVEL_METRICS:
        assert "$labels.upstream" in annotations["summary"]
        assert "$labels.upstream" in annotations["description"]
    if "metrics_relay_scrape_failures_total" in selected:
        assert "$labels.reason" in annotations["summary"]
        assert "$labels.reason" in annotations["description"]


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_alert_names_no_job(rule: dict[str, Any]):
    """No alert matches `job` against a value: users name their scrape jobs themselves."""
    texts = [token.text for token in tokens(rule["expr"])]
    for position, text in enumerate(texts):
        if text == "job" and position + 1 < len(texts):
            assert texts[position + 1] not in {"=", "!=", "=~", "!~"}, f"{rule['alert']} matches on job"


async def rules_health(prometheus: Prometheus) -> dict[str, tuple[str, str]]:
    """Each loaded alerting rule's health and last evaluation error, by alert name."""
    groups = (await prometheus.api("rules", type="alert"))["groups"]
    return {
        rule["name"]: (rule["health"], rule.get("lastError", ""))
        for group in groups
        for rule in group["rules"]
    }


async def active_alerts(prometheus: Prometheus) -> set[tuple[str, str, str, str]]:
    """(alertname, upstream, reason, state) of every pending or firing alert."""
    alerts = (await prometheus.api("alerts"))["alerts"]
    return {
        (
            alert["labels"]["alertname"],
            alert["labels"].get("upstream", ""),
            alert["labels"].get("reason", ""),
            alert["state"],
        )
        for alert in alerts
    }


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    """Whether the async `check` returns True within `within` seconds (it is asked every half second)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while True:
                if await check():
                    return True
                await asyncio.sleep(0.5)
    return False


@pytest.mark.peer
@pytest.mark.timeout(120)
async def test_alerts_follow_a_real_relays_health(tmp_path: Path):
    """On a Prometheus scraping a real relay, every rule evaluates cleanly and none is active while all is
    well; once the upstream answers 500, exactly the upstream-down and failing-scrapes alerts go pending."""
    async with relay_under_prometheus(tmp_path, rule_files=[ALERTS]) as running:
        prometheus = running.prometheus

        async def all_evaluated() -> bool:
            health = await rules_health(prometheus)
            return set(health) == set(RULE_IDS) and all(state == "ok" for state, _ in health.values())

        assert await eventually(all_evaluated, within=20), f"rules: {await rules_health(prometheus)}"
        assert await active_alerts(prometheus) == set()

        running.upstream.handler = body_handler(b"unavailable", status=500)
        wanted = {
            ("MetricsRelayUpstreamDown", UPSTREAM_NAME, "", "pending"),
            ("MetricsRelayScrapesFailing", UPSTREAM_NAME, "http_status", "pending"),
        }

        async def upstream_alerts_pending() -> bool:
            return await active_alerts(prometheus) == wanted

        assert await eventually(upstream_alerts_pending, within=30), (
            f"active: {await active_alerts(prometheus)}"
        )
