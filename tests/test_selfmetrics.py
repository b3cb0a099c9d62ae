"""The relay's own registry: every series of an upstream exists up front, counts land where they belong."""

from __future__ import annotations

import dataclasses

from relay.errors import SCRAPE_ERRORS, UpstreamTLSError
from relay.health import PassReport, ScrapeOutcome
from relay.rules import DROP_REASONS
from relay.selfmetrics import SelfMetrics


def series(metrics: SelfMetrics) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample of the registry as (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in metrics.registry.collect()
        for sample in family.samples
    }


def names_with(metrics: SelfMetrics, upstream: str) -> set[str]:
    return {name for name, labels in series(metrics) if ("upstream", upstream) in labels}


BASE_REPORT = PassReport(
    at=0.0,
    duration=0.2,
    ok=True,
    samples_in=10,
    samples_out=7,
    dropped={"relabel": 3},
    memo_misses=4,
    memo_entries=9,
    received_bytes=100,
    decompressed_bytes=400,
)


def report(**changes: int) -> PassReport:
    return dataclasses.replace(BASE_REPORT, **changes)


def test_every_counter_and_reason_exists_before_the_first_scrape():
    """Counters start at 0 for each upstream, with one failure series per reason and one drop series per
    reason, so that rate() and alerts work from the first scrape on."""
    metrics = SelfMetrics()
    metrics.track_upstreams(["ack"])
    found = series(metrics)
    for error in SCRAPE_ERRORS:
        labels = (("reason", error.reason), ("upstream", "ack"))
        assert ("metrics_relay_scrape_failures_total", labels) in found
    for reason in DROP_REASONS:
        assert ("metrics_relay_samples_dropped_total", (("reason", reason), ("upstream", "ack"))) in found
    expected = {
        "metrics_relay_scrapes_total",
        "metrics_relay_scrapes_aborted_total",
        "metrics_relay_upstream_requests_total",
        "metrics_relay_upstream_received_bytes_total",
        "metrics_relay_upstream_decompressed_bytes_total",
        "metrics_relay_upstream_request_duration_seconds_count",
        "metrics_relay_samples_received_total",
        "metrics_relay_samples_relayed_total",
        "metrics_relay_relabel_cache_misses_total",
        "metrics_relay_credentials_rotation_refused",
    }
    assert expected <= names_with(metrics, "ack")
    # Gauges that need a scrape or a certificate stay absent rather than pretending to a value.
    assert "metrics_relay_upstream_up" not in names_with(metrics, "ack")


def test_a_removed_upstream_leaves_no_series_behind():
    """After track_upstreams drops a name, nothing labelled with it remains, whatever was recorded."""
    metrics = SelfMetrics()
    metrics.track_upstreams(["ack", "other"])
    metrics.record_pass("other", report())
    metrics.record_scrape("other", ScrapeOutcome(0.0, 0.1, ok=True, relayed_bytes=5), None)
    metrics.track_upstreams(["ack"])
    assert names_with(metrics, "other") == set()
    assert names_with(metrics, "ack")


def test_a_pass_and_a_scrape_are_counted():
    """A pass adds its samples, bytes and drops; a failed, aborted scrape counts as failure and abort."""
    metrics = SelfMetrics()
    metrics.track_upstreams(["ack"])
    metrics.record_pass("ack", report())
    error = UpstreamTLSError("handshake failed")
    metrics.record_scrape("ack", ScrapeOutcome(0.0, 0.3, ok=False, relayed_bytes=50, aborted=True), error)
    value = metrics.registry.get_sample_value
    assert value("metrics_relay_samples_received_total", {"upstream": "ack"}) == 10
    assert value("metrics_relay_samples_relayed_total", {"upstream": "ack"}) == 7
    assert value("metrics_relay_samples_dropped_total", {"upstream": "ack", "reason": "relabel"}) == 3
    assert value("metrics_relay_upstream_received_bytes_total", {"upstream": "ack"}) == 100
    assert value("metrics_relay_upstream_decompressed_bytes_total", {"upstream": "ack"}) == 400
    assert value("metrics_relay_relabel_cache_entries", {"upstream": "ack"}) == 9
    assert value("metrics_relay_scrape_failures_total", {"upstream": "ack", "reason": "tls"}) == 1
    assert value("metrics_relay_scrapes_aborted_total", {"upstream": "ack"}) == 1
    assert value("metrics_relay_upstream_up", {"upstream": "ack"}) == 0
    assert value("metrics_relay_relayed_bytes_total", {"upstream": "ack"}) == 50


def test_memo_hit_ratio_of_a_pass():
    """The hit ratio is the share of sample lines whose series the memo knew; none for an empty body."""
    assert report(samples_in=10, memo_misses=4).memo_hit_ratio == 0.6
    assert report(samples_in=0, memo_misses=0).memo_hit_ratio is None
