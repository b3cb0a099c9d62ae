"""The running relay's state: one `Upstream` per configured upstream, reloads, readiness, reload status."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from relay.config import Config, UpstreamConfig
from relay.errors import ClientTLSMaterialError, ConfigError
from relay.flight import Flights
from relay.health import Health
from relay.loading import compile_rules, load_checked
from relay.recorder import UpstreamRecorder
from relay.rules import Rules
from relay.selfmetrics import SelfMetrics
from relay.tls import CredentialSource
from relay.upstream import UpstreamClient

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Upstream:
    """One configured upstream while the relay runs: its configuration, client, rules and health."""

    config: UpstreamConfig
    client: UpstreamClient
    rules: Rules
    recorder: UpstreamRecorder

    @property
    def name(self) -> str:
        """The upstream's configured name."""
        return self.config.name

    @property
    def health(self) -> Health:
        """The latest scrape and upstream request, as recorded."""
        return self.recorder.health


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """How the latest (re)load of the configuration went."""

    ok: bool
    at: float
    error: str = ""


@dataclass
class Runtime:
    """What the server reads on every request; a reload swaps in new `Upstream` objects."""

    config_path: Path
    config: Config
    metrics: SelfMetrics = field(default_factory=SelfMetrics)
    upstreams: dict[str, Upstream] = field(default_factory=dict)  # in file order: the first is /metrics
    flights: Flights = field(default_factory=Flights)
    reload_status: ReloadStatus | None = None
    shutting_down: bool = False
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP client session and the upstreams; report credential problems in the log."""
        # One session: its connection pool is keyed by host and TLS context, so upstreams never share a
        # connection, and a rotated certificate gets new connections.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._apply(self.config, compile_rules(self.config, {}))
        self._reloaded(ok=True)
        for upstream in self.upstreams.values():
            try:
                upstream.client.credentials.current()
            except ClientTLSMaterialError as exc:
                log.error(
                    "started with unusable credentials; this upstream's scrapes fail until they are fixed",
                    extra={"location": f"{upstream.config.location}.{exc.field}", "error": exc.problem},
                )

    async def close(self) -> None:
        """Close the client session and its pooled connections."""
        if self._session is not None:
            await self._session.close()

    def reload(self) -> None:
        """Load the configuration file again; on any problem keep the running one and raise ConfigError."""
        current = {name: upstream.rules for name, upstream in self.upstreams.items()}
        try:
            new_config, rules = load_checked(self.config_path, current)
        except ConfigError as exc:
            self._reloaded(ok=False, error=str(exc))
            raise
        self._apply(new_config, rules)
        self._reloaded(ok=True)
        log.info("configuration reloaded", extra={"upstreams": len(new_config.upstreams)})

    def _reloaded(self, *, ok: bool, error: str = "") -> None:
        now = time.time()
        self.reload_status = ReloadStatus(ok, now, error)
        self.metrics.reload_success.set(1 if ok else 0)
        if ok:
            self.metrics.reload_timestamp.set(now)

    def _apply(self, new_config: Config, rules: dict[str, Rules]) -> None:
        """Swap in a configuration; what did not change keeps its state (client, credentials, memo)."""
        if self._session is None:
            raise RuntimeError("Runtime.start() must run before a configuration is applied")
        upstreams = {}
        for config in new_config.upstreams:
            old = self.upstreams.get(config.name)
            client = _client(config, old, self._session)
            if old is None:
                recorder = UpstreamRecorder(config.name, self.metrics, Health(), client.credentials)
            else:  # the same name keeps its health and counts the scrapes still running across the reload
                recorder = old.recorder
                recorder.credentials = client.credentials
            upstreams[config.name] = Upstream(config, client, rules[config.name], recorder)
        for name, old in self.upstreams.items():
            if name not in upstreams:
                old.recorder.retired = True
        self.config = new_config
        self.upstreams = upstreams
        self.metrics.track_upstreams(upstreams)
        for upstream in upstreams.values():
            # Loaded now, not at the first scrape: their facts are in the metrics at once, and a rotation
            # that follows finds a good set to keep.
            with contextlib.suppress(ClientTLSMaterialError):
                upstream.client.credentials.current()
            upstream.recorder.note_credentials()

    def upstream(self, name: str | None) -> Upstream | None:
        """The upstream called `name`; the first configured one when `name` is None."""
        if name is None:
            return next(iter(self.upstreams.values()), None)
        return self.upstreams.get(name)

    def ready(self) -> bool:
        """The configuration is loaded and the relay serves (one upstream's failures do not change that)."""
        return self.reload_status is not None and not self.shutting_down


def _client(config: UpstreamConfig, old: Upstream | None, session: aiohttp.ClientSession) -> UpstreamClient:
    """The old client if nothing it depends on changed; else a new one, keeping the credential source (and
    with it the last good set) when the files are the same."""
    if old is not None and old.config.settings() == config.settings():
        return old.client
    same_files = old is not None and old.config.credential_settings() == config.credential_settings()
    credentials = old.client.credentials if old is not None and same_files else CredentialSource(config)
    return UpstreamClient(config, session, credentials)
