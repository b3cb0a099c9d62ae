"""The relay's own metrics: a private registry (never the global one), served on /relay/metrics only."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from contextlib import suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from relay import __version__, pipeline
from relay.errors import SCRAPE_ERRORS
from relay.negotiation import TEXT_CONTENT_TYPE
from relay.rules import DROP_REASONS

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
            "Requests sent to the upstream; concurrent scrapes share one.",
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
        ProcessCollector(namespace="metrics_relay", registry=registry)
        self._upstreams: set[str] = set()

    def track_upstreams(self, names: Iterable[str]) -> None:
        """Create every series of the configured upstreams up front and forget those of removed ones."""
        wanted = set(names)
        for name in self._upstreams - wanted:
            self.scrapes.remove(name)
            self.scrape_duration.remove(name)
            self.relayed_bytes.remove(name)
            self.upstream_requests.remove(name)
            self.samples_received.remove(name)
            self.samples_relayed.remove(name)
            self.relabel_cache_misses.remove(name)
            for error in SCRAPE_ERRORS:
                self.scrape_failures.remove(name, error.reason)
            for reason in DROP_REASONS:
                self.samples_dropped.remove(name, reason)
            for gauge in (self.upstream_up, self.client_cert_expiry, self.relabel_cache_entries):
                with suppress(KeyError):  # set only once a scrape or a certificate has been seen
                    gauge.remove(name)
        for name in wanted - self._upstreams:
            self.scrapes.labels(name)
            self.scrape_duration.labels(name)
            self.relayed_bytes.labels(name)
            self.upstream_requests.labels(name)
            self.samples_received.labels(name)
            self.samples_relayed.labels(name)
            self.relabel_cache_misses.labels(name)
            for error in SCRAPE_ERRORS:
                self.scrape_failures.labels(name, error.reason)
            for reason in DROP_REASONS:
                self.samples_dropped.labels(name, reason)
        self._upstreams = wanted

    def exposition(self, openmetrics: bool) -> tuple[bytes, str]:
        """The registry's exposition and its Content-Type: OpenMetrics when the scraper prefers it."""
        if openmetrics:
            return generate_openmetrics(self.registry), OPENMETRICS_CONTENT_TYPE  # type: ignore[no-untyped-call]
        return generate_latest(self.registry), TEXT_CONTENT_TYPE
