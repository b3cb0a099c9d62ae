"""The relabel rule sets the benchmarks run, as metric_relabel_configs YAML, and their compiled Rules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relay.config import parse
from relay.rules import Rules

# In the style of kube-prometheus' apiserver ServiceMonitor: thin the latency histograms by `le`, drop the
# largest bucket family and families that Kubernetes deprecated in favour of a successor.
KUBE_PROMETHEUS_APISERVER = r"""
- source_labels: [__name__, le]
  regex: >-
    apiserver_request_(sli_)?duration_seconds_bucket;(0\.005|0\.025|0\.05|0\.2|0\.6|0\.8|1\.25|1\.5|2|3|4|6|8|15|20|45)
  action: drop
- source_labels: [__name__, le]
  regex: 'workqueue_(work|queue)_duration_seconds_bucket;(1e-0[678]|9\.9+e-0[56])'
  action: drop
- source_labels: [__name__]
  regex: 'etcd_request_duration_seconds_bucket|etcd_(debugging|disk|server)_.*'
  action: drop
- source_labels: [__name__]
  regex: 'apiserver_storage_objects|apiserver_request_slo_duration_seconds_(bucket|sum|count)'
  action: drop
- source_labels: [__name__]
  regex: 'apiserver_admission_(controller|step)_admission_latencies_seconds_.*|go_gc_pauses_seconds_.*'
  action: drop
"""

# Touches every series: a constant label on all, label names copied under a prefix, a label derived from
# another with a capture group.
REWRITE_EVERY_SERIES = r"""
- target_label: cluster
  replacement: bench-cluster
- action: labelmap
  regex: (resource|verb|code)
  replacement: k8s_${1}
- source_labels: [code]
  regex: '(\d)\d\d'
  target_label: code_class
  replacement: ${1}xx
"""

NO_RULES = "[]"


@dataclass(frozen=True)
class RuleSet:
    """A named metric_relabel_configs list."""

    name: str
    yaml: str

    def indented(self, spaces: int) -> str:
        """The YAML list indented to sit under a `metric_relabel_configs:` key."""
        pad = " " * spaces
        return "\n".join(pad + line for line in self.yaml.strip().splitlines())


KUBE_PROMETHEUS = RuleSet("kube-prometheus", KUBE_PROMETHEUS_APISERVER)
REWRITE = RuleSet("rewrite-every-series", REWRITE_EVERY_SERIES)
NONE = RuleSet("no rules", NO_RULES)
ALL_RULE_SETS = (KUBE_PROMETHEUS, REWRITE, NONE)


def upstream_yaml(url: str, rule_set: RuleSet, extra: str = "") -> str:
    """A one-upstream relay configuration with `rule_set`; `extra` adds indented upstream settings."""
    return (
        f"upstreams:\n  - name: bench\n    url: {url}\n{extra}"
        f"    metric_relabel_configs:\n{rule_set.indented(6)}\n"
    )


def compiled_rules(rule_set: RuleSet, relabel_cache_size: int | None = None) -> Rules:
    """Fresh Rules (an empty memo) for `rule_set`, compiled as the relay compiles its configuration; without
    `relabel_cache_size` the configuration's default applies."""
    extra = f"    relabel_cache_size: {relabel_cache_size}\n" if relabel_cache_size is not None else ""
    text = upstream_yaml("http://127.0.0.1/metrics", rule_set, extra)
    return Rules.for_upstream(parse(text, source="bench.yml", base_dir=Path()).upstreams[0])
