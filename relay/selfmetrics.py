"""The relay's own metrics: a private registry (never the global one), served on /relay/metrics only."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from contextlib import suppress
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from relay import __version__, pipeline
from relay.errors import SCRAPE_ERRORS, ScrapeError
from relay.health import PassReport, ScrapeOutcome
from relay.negotiation import TEXT_CONTENT_TYPE
from relay.rules import DROP_REASONS
from relay.tls import CredentialSource

SCRAPE_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# `_created` series would double every counter for no use to a scraper of this endpoint.
_disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream


class SelfMetrics:
    """The collectors the rest of the relay updates, and the exposition of them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        build_info = Gauge(
            "metrics_relay_build_info",
            "The relay's version, Python, and line engine (native or python); always 1.",
            ["version", "python_version", "engine"],
            registry=registry,
        )
        build_info.labels(__version__, platform.python_version(), pipeline.default_engine).set(1)
        self.scrapes = Counter(
            "metrics_relay_scrapes",
            "Scrapes of an upstream served by the relay.",
            ["upstream"],
            registry=registry,
        )
        self.scrape_failures = Counter(
            "metrics_relay_scrape_failures",
            "Scrapes of an upstream that failed, by reason.",
            ["upstream", "reason"],
            registry=registry,
        )
        self.scrapes_aborted = Counter(
            "metrics_relay_scrapes_aborted",
            "Scrapes whose connection was reset after part of the body was sent (the scraper saw a failure).",
            ["upstream"],
            registry=registry,
        )
        self.scrapes_rejected = Counter(
            "metrics_relay_scrapes_rejected",
            "Scrapes answered 503 because --web.max-requests scrapes were already being served.",
            ["upstream"],
            registry=registry,
        )
        self.scrape_duration = Histogram(
            "metrics_relay_scrape_duration_seconds",
            "Time from a scraper's request to the relayed body's end.",
            ["upstream"],
            buckets=SCRAPE_DURATION_BUCKETS,
            registry=registry,
        )
        self.relayed_bytes = Counter(
            "metrics_relay_relayed_bytes",
            "Bytes of relayed exposition written to scrapers.",
            ["upstream"],
            registry=registry,
        )
        self.upstream_requests = Counter(
            "metrics_relay_upstream_requests",
            "Requests sent to the upstream for relayed scrapes "
            "(concurrent ones share one; debug summaries are not counted).",
            ["upstream"],
            registry=registry,
        )
        self.upstream_request_duration = Histogram(
            "metrics_relay_upstream_request_duration_seconds",
            "Time from sending the upstream request to the end of its relabeled body.",
            ["upstream"],
            buckets=SCRAPE_DURATION_BUCKETS,
            registry=registry,
        )
        self.received_bytes = Counter(
            "metrics_relay_upstream_received_bytes",
            "Body bytes received from the upstream as sent on the wire (compressed, if it compressed).",
            ["upstream"],
            registry=registry,
        )
        self.decompressed_bytes = Counter(
            "metrics_relay_upstream_decompressed_bytes",
            "Body bytes received from the upstream after decompression: what the relay parsed.",
            ["upstream"],
            registry=registry,
        )
        self.samples_received = Counter(
            "metrics_relay_samples_received",
            "Sample lines read from the upstream.",
            ["upstream"],
            registry=registry,
        )
        self.samples_relayed = Counter(
            "metrics_relay_samples_relayed",
            "Samples written to scrapers after relabeling.",
            ["upstream"],
            registry=registry,
        )
        self.samples_dropped = Counter(
            "metrics_relay_samples_dropped",
            "Samples left out of relayed bodies, by reason.",
            ["upstream", "reason"],
            registry=registry,
        )
        self.relabel_cache_misses = Counter(
            "metrics_relay_relabel_cache_misses",
            "Series that had to be parsed and relabeled because the memo did not have them.",
            ["upstream"],
            registry=registry,
        )
        self.relabel_cache_entries = Gauge(
            "metrics_relay_relabel_cache_entries",
            "Series texts whose relabeling result is remembered (bounded by relabel_cache_size).",
            ["upstream"],
            registry=registry,
        )
        self.upstream_up = Gauge(
            "metrics_relay_upstream_up",
            "1 if the latest scrape of the upstream succeeded, else 0; absent before the first scrape.",
            ["upstream"],
            registry=registry,
        )
        self.client_cert_expiry = Gauge(
            "metrics_relay_client_certificate_expiry_timestamp_seconds",
            "When the client certificate in use for the upstream expires.",
            ["upstream"],
            registry=registry,
        )
        self.client_cert_not_before = Gauge(
            "metrics_relay_client_certificate_not_before_timestamp_seconds",
            "From when the client certificate in use for the upstream is valid.",
            ["upstream"],
            registry=registry,
        )
        self.ca_cert_expiry = Gauge(
            "metrics_relay_ca_certificate_expiry_timestamp_seconds",
            "When the earliest-expiring certificate of the upstream's ca_file in use expires.",
            ["upstream"],
            registry=registry,
        )
        self.credentials_loaded = Gauge(
            "metrics_relay_credentials_last_reload_success_timestamp_seconds",
            "When the upstream's credential files were last loaded successfully (at start or on rotation).",
            ["upstream"],
            registry=registry,
        )
        self.credentials_refused = Gauge(
            "metrics_relay_credentials_rotation_refused",
            "1 while rotated credential files are refused and the last good set is in use, else 0.",
            ["upstream"],
            registry=registry,
        )
        self.reload_success = Gauge(
            "metrics_relay_config_last_reload_successful",
            "1 if the latest configuration (re)load succeeded, else 0.",
            registry=registry,
        )
        self.reload_timestamp = Gauge(
            "metrics_relay_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            registry=registry,
        )
        self.web_config_reload_success = Gauge(
            "metrics_relay_web_config_last_reload_successful",
            "1 if the latest read of --web.config.file succeeded (or none is used), else 0.",
            registry=registry,
        )
        self.web_config_reload_success.set(1)
        ProcessCollector(namespace="metrics_relay", registry=registry)
        self._upstreams: set[str] = set()

    def _per_upstream(self) -> tuple[Counter | Gauge | Histogram, ...]:
        """The collectors with only the `upstream` label, all created up front for each upstream."""
        return (
            self.scrapes,
            self.scrapes_aborted,
            self.scrapes_rejected,
            self.scrape_duration,
            self.relayed_bytes,
            self.upstream_requests,
            self.upstream_request_duration,
            self.received_bytes,
            self.decompressed_bytes,
            self.samples_received,
            self.samples_relayed,
            self.relabel_cache_misses,
            self.credentials_refused,
        )

    def _per_upstream_once_known(self) -> tuple[Gauge, ...]:
        """Gauges that have a value only once a scrape or a credential set has been seen."""
        return (
            self.upstream_up,
            self.relabel_cache_entries,
            self.client_cert_expiry,
            self.client_cert_not_before,
            self.ca_cert_expiry,
            self.credentials_loaded,
        )

    def track_upstreams(self, names: Iterable[str]) -> None:
        """Create every series of the configured upstreams up front and forget those of removed ones."""
        wanted = set(names)
        for name in self._upstreams - wanted:
            for collector in self._per_upstream():
                collector.remove(name)
            for error in SCRAPE_ERRORS:
                self.scrape_failures.remove(name, error.reason)
            for reason in DROP_REASONS:
                self.samples_dropped.remove(name, reason)
            for gauge in self._per_upstream_once_known():
                with suppress(KeyError):
                    gauge.remove(name)
        for name in wanted - self._upstreams:
            for collector in self._per_upstream():
                collector.labels(name)
            for error in SCRAPE_ERRORS:
                self.scrape_failures.labels(name, error.reason)
            for reason in DROP_REASONS:
                self.samples_dropped.labels(name, reason)
        self._upstreams = wanted

    def record_scrape(self, name: str, outcome: ScrapeOutcome, error: ScrapeError | None) -> None:
        """Count one finished scrape of upstream `name`."""
        self.scrapes.labels(name).inc()
        self.scrape_duration.labels(name).observe(outcome.duration)
        self.relayed_bytes.labels(name).inc(outcome.relayed_bytes)
        self.upstream_up.labels(name).set(1 if outcome.ok else 0)
        if error is not None:
            self.scrape_failures.labels(name, error.reason).inc()
        if outcome.aborted:
            self.scrapes_aborted.labels(name).inc()

    def record_pass(self, name: str, report: PassReport) -> None:
        """Count one upstream request of `name` and its relabel pass."""
        self.upstream_requests.labels(name).inc()
        self.upstream_request_duration.labels(name).observe(report.duration)
        self.received_bytes.labels(name).inc(report.received_bytes)
        self.decompressed_bytes.labels(name).inc(report.decompressed_bytes)
        self.samples_received.labels(name).inc(report.samples_in)
        self.samples_relayed.labels(name).inc(report.samples_out)
        for reason, count in report.dropped.items():
            self.samples_dropped.labels(name, reason).inc(count)
        self.relabel_cache_misses.labels(name).inc(report.memo_misses)
        self.relabel_cache_entries.labels(name).set(report.memo_entries)

    def record_credentials(self, name: str, source: CredentialSource) -> None:
        """Publish the facts of the credential set in use for `name` and whether a rotation is refused."""
        self.credentials_refused.labels(name).set(0 if source.refused is None else 1)
        if source.loaded_at is not None:
            self.credentials_loaded.labels(name).set(source.loaded_at)
        credentials = source.last_good
        if credentials is None:
            return
        certificate = credentials.certificate
        # A reload that drops cert_file or ca_file drops their dates too, lest an expiry alert fire on them.
        _set_or_remove(self.client_cert_expiry, name, certificate.not_after if certificate else None)
        _set_or_remove(self.client_cert_not_before, name, certificate.not_before if certificate else None)
        _set_or_remove(self.ca_cert_expiry, name, credentials.ca_not_after)

    def exposition(self, openmetrics: bool) -> tuple[bytes, str]:
        """The registry's exposition and its Content-Type: OpenMetrics when the scraper prefers it."""
        if openmetrics:
            return generate_openmetrics(self.registry), OPENMETRICS_CONTENT_TYPE  # type: ignore[no-untyped-call]
        return generate_latest(self.registry), TEXT_CONTENT_TYPE


def _set_or_remove(gauge: Gauge, name: str, moment: datetime | None) -> None:
    if moment is None:
        with suppress(KeyError):  # never set
            gauge.remove(name)
    else:
        gauge.labels(name).set(moment.timestamp())
