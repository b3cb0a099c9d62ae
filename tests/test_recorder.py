"""The data path's recorder: reports land in metrics and health, credentials noted, retired counts nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from relay.config import parse
from relay.errors import UpstreamStatusError
from relay.health import Health, ScrapeOutcome
from relay.recorder import UpstreamRecorder
from relay.selfmetrics import SelfMetrics
from relay.tls import CredentialSource
from tests.support import Pki, config_yaml, write_other_key
from tests.test_selfmetrics import BASE_REPORT

REPORT = BASE_REPORT  # one report in the shape a pass makes
FAILED = ScrapeOutcome(at=2.0, duration=0.3, ok=False, relayed_bytes=0, reason="http_status")
UPSTREAM = {"upstream": "ack"}


def recorder_for(pki: Pki) -> tuple[UpstreamRecorder, SelfMetrics]:
    """A recorder of upstream `ack`, with a registry that tracks it and credentials from real files."""
    upstream = parse(
        config_yaml("https://h/m", pki.client_files(), name="ack"), source="r.yml", base_dir=Path("/")
    ).upstreams[0]
    metrics = SelfMetrics()
    metrics.track_upstreams(["ack"])
    return UpstreamRecorder("ack", metrics, Health(), CredentialSource(upstream)), metrics


def value(metrics: SelfMetrics, name: str, **labels: str) -> float | None:
    """A sample of upstream `ack` in the registry (None if it does not exist)."""
    return metrics.registry.get_sample_value(name, UPSTREAM | labels)


def samples(metrics: SelfMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry but the process' own, which move by themselves."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if not sample.name.startswith("metrics_relay_process_")
    }


def test_a_pass_is_kept_as_health_and_counted(pki):
    """An upstream pass becomes the upstream's last pass and is counted under its name."""
    recorder, metrics = recorder_for(pki)
    recorder.upstream_pass(REPORT)
    assert recorder.health.last_pass is REPORT
    assert value(metrics, "metrics_relay_upstream_requests_total") == 1
    assert value(metrics, "metrics_relay_samples_dropped_total", reason="relabel") == 3
    assert value(metrics, "metrics_relay_upstream_received_bytes_total") == 100


def test_a_finished_scrape_is_kept_counted_and_notes_the_credentials(pki):
    """A failed scrape becomes the last scrape, counts under its reason, and publishes the dates of the
    credentials in use, which the registry did not have before."""
    recorder, metrics = recorder_for(pki)
    assert value(metrics, "metrics_relay_client_certificate_expiry_timestamp_seconds") is None
    credentials = recorder.credentials.current()
    recorder.scrape_finished(FAILED, UpstreamStatusError("the upstream answered 500"))
    assert recorder.health.last_scrape is FAILED
    assert value(metrics, "metrics_relay_scrapes_total") == 1
    assert value(metrics, "metrics_relay_scrape_failures_total", reason="http_status") == 1
    assert value(metrics, "metrics_relay_upstream_up") == 0
    assert credentials.certificate is not None
    assert value(metrics, "metrics_relay_client_certificate_expiry_timestamp_seconds") == (
        credentials.certificate.not_after.timestamp()
    )
    assert value(metrics, "metrics_relay_credentials_last_reload_success_timestamp_seconds") == (
        recorder.credentials.loaded_at
    )
    assert value(metrics, "metrics_relay_credentials_rotation_refused") == 0


def test_a_refused_rotation_is_noted(pki, tmp_path):
    """After a rotation the credential source refused, noting the credentials raises the refused gauge."""
    recorder, metrics = recorder_for(pki)
    recorder.credentials.current()
    write_other_key(tmp_path / "client" / "tls.key")
    recorder.credentials.current()
    recorder.note_credentials()
    assert value(metrics, "metrics_relay_credentials_rotation_refused") == 1


def test_a_rejected_scrape_is_counted(pki):
    """A scrape turned away for --web.max-requests counts as rejected and changes no health."""
    recorder, metrics = recorder_for(pki)
    recorder.scrape_rejected()
    assert value(metrics, "metrics_relay_scrapes_rejected_total") == 1
    assert recorder.health.last_scrape is None


@pytest.mark.parametrize(
    "report",
    [
        lambda recorder: recorder.upstream_pass(REPORT),
        lambda recorder: recorder.scrape_finished(FAILED, UpstreamStatusError("the upstream answered 500")),
        lambda recorder: recorder.scrape_rejected(),
        lambda recorder: recorder.note_credentials(),
    ],
    ids=["upstream_pass", "scrape_finished", "scrape_rejected", "note_credentials"],
)
def test_a_retired_recorder_counts_nothing(pki, report: Callable[[UpstreamRecorder], None]):
    """Once its upstream left the configuration, a late report changes neither metrics nor health."""
    recorder, metrics = recorder_for(pki)
    recorder.credentials.current()
    recorder.retired = True
    before = samples(metrics)
    report(recorder)
    assert samples(metrics) == before
    assert (recorder.health.last_scrape, recorder.health.last_pass) == (None, None)
