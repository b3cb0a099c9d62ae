"""The running relay's state: configuration and its (re)loading, upstream clients, readiness, last results."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from relay.config import Config, UpstreamConfig
from relay.errors import ConfigError, ScrapeError
from relay.flight import Flights
from relay.loading import compile_rules, credential_problems, load_checked
from relay.pipeline import BodyRelabeler
from relay.rules import Rules
from relay.selfmetrics import SelfMetrics
from relay.tls import CredentialSource
from relay.upstream import UpstreamClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScrapeOutcome:
    """How the latest scrape of an upstream ended, for the landing page."""

    at: float
    duration: float
    ok: bool
    relayed_bytes: int
    reason: str = ""
    message: str = ""


@dataclass
class Runtime:
    """What the server reads on every request; replaced piecewise on reload."""

    config_path: Path
    config: Config
    metrics: SelfMetrics = field(default_factory=SelfMetrics)
    clients: dict[str, UpstreamClient] = field(default_factory=dict)
    rules: dict[str, Rules] = field(default_factory=dict)
    flights: Flights = field(default_factory=Flights)
    outcomes: dict[str, ScrapeOutcome] = field(default_factory=dict)
    shutting_down: bool = False
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP client session and the upstream clients; report credential problems in the log."""
        # One session: its connection pool is keyed by host and TLS context, so upstreams never share a
        # connection, and a rotated certificate gets new connections.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._apply(self.config, compile_rules(self.config, {}))
        self.metrics.reload_success.set(1)
        self.metrics.reload_timestamp.set(time.time())
        for problem in credential_problems(self.config):
            log.error(
                "upstream credentials unusable; its scrapes fail until they are fixed",
                extra={"location": problem.path, "error": problem.message},
            )

    async def close(self) -> None:
        """Close the client session and its pooled connections."""
        if self._session is not None:
            await self._session.close()

    def reload(self) -> None:
        """Load the configuration file again; on any problem keep the running one and raise ConfigError."""
        try:
            new_config, rules = load_checked(self.config_path, self.rules)
        except ConfigError:
            self.metrics.reload_success.set(0)
            raise
        self._apply(new_config, rules)
        self.metrics.reload_success.set(1)
        self.metrics.reload_timestamp.set(time.time())
        log.info("configuration reloaded", extra={"upstreams": len(new_config.upstreams)})

    def _apply(self, new_config: Config, rules: dict[str, Rules]) -> None:
        """Swap in a configuration; what did not change keeps its state (client, credentials, memo)."""
        if self._session is None:
            raise RuntimeError("Runtime.start() must run before a configuration is applied")
        clients = {}
        for upstream in new_config.upstreams:
            old = self.clients.get(upstream.name)
            if old is not None and old.config.settings() == upstream.settings():
                clients[upstream.name] = old
                continue
            # Same files: keep the credential source, and with it the last good set.
            same_files = (
                old is not None and old.config.credential_settings() == upstream.credential_settings()
            )
            credentials = old.credentials if old is not None and same_files else CredentialSource(upstream)
            clients[upstream.name] = UpstreamClient(upstream, self._session, credentials)
        self.rules = rules
        self.config = new_config
        self.clients = clients
        self.outcomes = {name: outcome for name, outcome in self.outcomes.items() if name in clients}
        self.metrics.track_upstreams(clients)
        for client in clients.values():
            self._note_certificate(client)

    def client(self, name: str | None) -> UpstreamClient | None:
        """The client for upstream `name`; the first configured upstream when `name` is None."""
        if name is None:
            return self.clients.get(self.config.upstreams[0].name)
        return self.clients.get(name)

    def ready(self) -> bool:
        """Configuration loaded, every upstream's credentials loaded, and not shutting down."""
        if self.shutting_down:
            return False
        for client in self.clients.values():
            try:
                client.credentials.current()
            except ScrapeError:
                return False
        return True

    def record(self, upstream: UpstreamConfig, outcome: ScrapeOutcome, error: ScrapeError | None) -> None:
        """Count a finished scrape in the metrics and keep it for the landing page."""
        name = upstream.name
        if name not in self.clients:  # removed by a reload while it ran: its series are gone
            return
        self.outcomes[name] = outcome
        metrics = self.metrics
        metrics.scrapes.labels(name).inc()
        metrics.scrape_duration.labels(name).observe(outcome.duration)
        metrics.relayed_bytes.labels(name).inc(outcome.relayed_bytes)
        metrics.upstream_up.labels(name).set(1 if outcome.ok else 0)
        if error is not None:
            metrics.scrape_failures.labels(name, error.reason).inc()
        client = self.clients.get(name)
        if client is not None:
            self._note_certificate(client)

    def record_upstream_pass(self, rules: Rules, relabeler: BodyRelabeler) -> None:
        """Count one upstream request and its relabel pass (shared by every scrape that joined it)."""
        name = rules.upstream.name
        if name not in self.rules:  # removed by a reload while it ran: its series are gone
            return
        metrics = self.metrics
        metrics.upstream_requests.labels(name).inc()
        metrics.samples_received.labels(name).inc(relabeler.samples_in)
        metrics.samples_relayed.labels(name).inc(relabeler.samples_out)
        for reason, count in relabeler.dropped.items():
            metrics.samples_dropped.labels(name, reason).inc(count)
        metrics.relabel_cache_misses.labels(name).inc(relabeler.memo_misses)
        metrics.relabel_cache_entries.labels(name).set(rules.memo_entries)

    def _note_certificate(self, client: UpstreamClient) -> None:
        credentials = client.credentials.last_good
        if credentials is not None and credentials.certificate is not None:
            self.metrics.client_cert_expiry.labels(client.config.name).set(
                credentials.certificate.not_after.timestamp()
            )
