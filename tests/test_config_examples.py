"""The example configurations under config/: the control-plane rule set over real captured expositions."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.config import UpstreamConfig
from relay.config import parse as parse_config
from relay.relabel import RelabelProgram
from tests.support import require_fixtures

CONFIG = Path(__file__).resolve().parents[1] / "config"
CONTROL_PLANE_CAPTURES = (
    "kube-apiserver-1.35-minikube.prom",
    "kube-scheduler-1.35-minikube.prom",
    "kube-controller-manager-1.35-minikube.prom",
)


def control_plane_upstream() -> UpstreamConfig:
    """The one upstream of config/control-plane-rules.yml."""
    path = CONFIG / "control-plane-rules.yml"
    (upstream,) = parse_config(path.read_text(encoding="utf-8"), source=str(path), base_dir=CONFIG).upstreams
    return upstream


@pytest.fixture(scope="module")
def control_plane_verdicts() -> dict[str, list[tuple[dict[str, str], str | None]]]:
    """For each captured body: every sample's labels and the rule that dropped it (None: kept)."""
    fixtures = require_fixtures()
    program = RelabelProgram.compile(control_plane_upstream().metric_relabel_configs)
    verdicts = {}
    for name in CONTROL_PLANE_CAPTURES:
        found = []
        for family in text_string_to_metric_families((fixtures / name).read_text(encoding="utf-8")):
            for sample in family.samples:
                labels = {"__name__": sample.name, **{k: v for k, v in sample.labels.items() if v}}
                steps = program.trace(labels)
                found.append((labels, steps[-1][0] if steps and steps[-1][1] is None else None))
        verdicts[name] = found
    return verdicts


def test_every_control_plane_rule_drops_real_series(control_plane_verdicts):
    """Each rule of config/control-plane-rules.yml drops real samples, and together as many as it says."""
    dropped_by = {
        rule for verdicts in control_plane_verdicts.values() for _, rule in verdicts if rule is not None
    }
    assert dropped_by == {spec.location for spec in control_plane_upstream().metric_relabel_configs}
    samples = [verdict for verdicts in control_plane_verdicts.values() for verdict in verdicts]
    dropped = sum(rule is not None for _, rule in samples)
    # The file's header says "about 12,000 of 28,000 samples".
    assert (round(dropped, -3), round(len(samples), -3)) == (12_000, 28_000)


def test_control_plane_rules_keep_every_inf_bucket_and_the_successor(control_plane_verdicts):
    """No +Inf bucket is dropped, so each histogram stays complete; apiserver_resource_objects stays whole."""
    apiserver = control_plane_verdicts["kube-apiserver-1.35-minikube.prom"]
    lost_inf = [
        labels
        for verdicts in control_plane_verdicts.values()
        for labels, rule in verdicts
        if rule is not None and labels.get("le") == "+Inf"
    ]
    assert lost_inf == []
    successor = [rule for labels, rule in apiserver if labels["__name__"] == "apiserver_resource_objects"]
    assert successor
    assert set(successor) == {None}
