"""The narrow interface through which the data path reports, and its implementation: metrics and health.

Scrapes and upstream passes only call a `Recorder`; they never reach back into the running relay's state.
"""

from __future__ import annotations

from typing import Protocol

from relay.errors import ScrapeError
from relay.health import Health, PassReport, ScrapeOutcome
from relay.selfmetrics import SelfMetrics
from relay.tls import CredentialSource


class Recorder(Protocol):
    """What the data path tells about one upstream."""

    def upstream_pass(self, report: PassReport) -> None:
        """One upstream request and its relabel pass ended (successfully or not)."""

    def scrape_finished(self, outcome: ScrapeOutcome, error: ScrapeError | None) -> None:
        """One scraper's request ended; `error` is why it failed, None if it got its whole body."""

    def scrape_rejected(self) -> None:
        """A scrape was turned away with 503: the relay already serves --web.max-requests scrapes."""


class UpstreamRecorder:
    """Counts one upstream's scrapes and passes in the self-metrics and keeps its health for the page."""

    def __init__(
        self, name: str, metrics: SelfMetrics, health: Health, credentials: CredentialSource
    ) -> None:
        self.name = name
        self.health = health
        self.credentials = credentials
        self.retired = False  # the upstream left the configuration: its series are gone, count nothing
        self._metrics = metrics

    def upstream_pass(self, report: PassReport) -> None:
        if self.retired:
            return
        self.health.last_pass = report
        self._metrics.record_pass(self.name, report)

    def scrape_finished(self, outcome: ScrapeOutcome, error: ScrapeError | None) -> None:
        if self.retired:
            return
        self.health.last_scrape = outcome
        self._metrics.record_scrape(self.name, outcome, error)
        self.note_credentials()

    def scrape_rejected(self) -> None:
        if not self.retired:
            self._metrics.scrapes_rejected.labels(self.name).inc()

    def note_credentials(self) -> None:
        """Publish what is known of the credentials in use (expiry dates, last load, refused rotation)."""
        if not self.retired:
            self._metrics.record_credentials(self.name, self.credentials)
