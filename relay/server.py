"""HTTP endpoints: relayed bodies and their failure signalling, self-metrics, health, reload, landing page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time

from aiohttp import web

from relay import debug_pages, landing
from relay.errors import ConfigError, RelayInternalError, ScrapeError, ScraperGoneError, ShutdownError
from relay.failures import deadline_error
from relay.flight import Flights
from relay.health import ScrapeOutcome
from relay.inbound import InboundProtection
from relay.negotiation import response_content_type, scraper_preferences
from relay.runtime import Runtime, Upstream
from relay.upstream import SCRAPE_TIMEOUT_HEADER
from relay.upstream_pass import upstream_pass

log = logging.getLogger(__name__)

RUNTIME_KEY = web.AppKey("runtime", Runtime)
SCRAPE_TIMEOUT_OFFSET_SECONDS = 0.5


class ScrapeSlots:
    """A bound on relayed scrapes at once (--web.max-requests); 0 means none."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> bool:
        """Take a slot if one is free."""
        if self.limit and self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        self.in_use -= 1


SLOTS_KEY = web.AppKey("scrape_slots", ScrapeSlots)


def create_app(
    runtime: Runtime, *, max_requests: int = 0, protection: InboundProtection | None = None
) -> web.Application:
    """The relay's aiohttp application serving `runtime`: at most `max_requests` relayed scrapes at once,
    every endpoint behind `protection` (basic auth, headers) when given."""
    app = web.Application(middlewares=[protection.middleware] if protection is not None else [])
    if protection is not None:
        app.on_response_prepare.append(protection.add_headers)
    app[RUNTIME_KEY] = runtime
    app[SLOTS_KEY] = ScrapeSlots(max_requests)
    app.router.add_get("/", landing_page)
    for path in ("/metrics", "/metrics/{name}"):
        # HEAD answers from what is known, without an upstream request (aiohttp would run the GET handler).
        app.router.add_get(path, relay_metrics, allow_head=False)
        app.router.add_route("HEAD", path, relay_metrics_head)
    app.router.add_get("/relay/metrics", self_metrics)
    debug_pages.add_routes(app, runtime)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app


def scraper_timeout(header: str | None) -> float | None:
    """The scraper's own timeout from X-Prometheus-Scrape-Timeout-Seconds, when it is a positive number."""
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    return seconds if seconds > 0 else None  # also None for NaN


def effective_timeout(configured: float, scrape_timeout_header: str | None) -> float:
    """min(configured timeout, the scraper's own timeout less an offset for the way back), in seconds."""
    scraper = scraper_timeout(scrape_timeout_header)
    if scraper is None:
        return configured
    if scraper > SCRAPE_TIMEOUT_OFFSET_SECONDS:
        scraper -= SCRAPE_TIMEOUT_OFFSET_SECONDS
    return min(configured, scraper)


async def relay_metrics(request: web.Request) -> web.StreamResponse:
    """Relay one upstream's body; 502/504 before the first byte, a reset connection after it."""
    runtime = request.app[RUNTIME_KEY]
    name = request.match_info.get("name")
    upstream = runtime.upstream(name)
    if upstream is None:
        return _text(404, f"unknown upstream {name!r}")
    slots = request.app[SLOTS_KEY]
    if not slots.take():
        upstream.recorder.scrape_rejected()
        return _text(
            503,
            f"too many scrapes at once: the relay serves at most {slots.limit} (--web.max-requests)\n"
            "what to do: retry later, raise --web.max-requests, or use min_interval so scrapers share bodies",
        )
    try:
        return await _relay(request, upstream, runtime.flights)
    finally:
        slots.give_back()


async def _relay(request: web.Request, upstream: Upstream, flights: Flights) -> web.StreamResponse:
    scrape = RelayedScrape(request, upstream)
    header = request.headers.get(SCRAPE_TIMEOUT_HEADER)
    timeout = effective_timeout(upstream.config.timeout, header)
    try:
        async with asyncio.timeout(timeout):
            await scrape.run(flights)
    except TimeoutError:
        error: ScrapeError = deadline_error(
            timeout, configured=upstream.config.timeout, scraper_timeout=scraper_timeout(header)
        )
    except ScrapeError as exc:
        error = exc
    except asyncio.CancelledError:
        if not request.app[RUNTIME_KEY].shutting_down:
            scrape.record(ScraperGoneError("the scraper went away before its body was complete"))
            raise
        # Cut by the end of the shutdown grace period: a failure the scraper sees, so counted and logged.
        cut = ShutdownError("the relay shut down before the body was complete")
        scrape.record(cut)
        _log_failure(upstream.name, cut, scrape.sent)
        raise
    except ConnectionResetError:  # writing to a scraper that has closed its end
        scrape.record(ScraperGoneError("the scraper closed the connection before its body was complete"))
        return scrape.response
    except Exception as exc:
        log.exception("unexpected error while relaying", extra={"upstream": upstream.name})
        error = RelayInternalError(f"internal error of the relay ({type(exc).__name__}); see its log")
    else:
        await scrape.response.write_eof()
        scrape.record(None)
        return scrape.response
    scrape.record(error)
    _log_failure(upstream.name, error, scrape.sent)
    if not scrape.response.prepared:
        return _text(error.status, error.explanation())
    _reset(request)
    return scrape.response


async def relay_metrics_head(request: web.Request) -> web.Response:
    """The head a GET would get (Content-Type from the scraper's Accept), without asking the upstream."""
    name = request.match_info.get("name")
    upstream = request.app[RUNTIME_KEY].upstream(name)
    if upstream is None:
        return web.Response(status=404, content_type="text/plain")
    preferences = scraper_preferences(request.headers.get("Accept", ""))
    # Whether the upstream would answer OpenMetrics is known only by asking it: the text format is the
    # answer every upstream gives.
    content_type = response_content_type(openmetrics=False, utf8_names=preferences.utf8_names)
    return web.Response(headers={"Content-Type": content_type})


def _log_failure(upstream: str, error: ScrapeError, sent: int) -> None:
    """The `scrape failed` line: the same explanation the 502 body gives, and how far the body got."""
    log.warning(
        "scrape failed",
        extra={"upstream": upstream, "reason": error.reason, "after_bytes": sent} | error.log_fields(),
    )


def _reset(request: web.Request) -> None:
    """Break the connection so that the scraper cannot take the partial body for a whole one.

    A plain close would look like a clean end to an HTTP/1.0 client (no chunked encoding there);
    SO_LINGER 0 makes the close a reset, which every client reports as an error.
    """
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class RelayedScrape:
    """One scraper's request: it follows the upstream pass (flight) for its upstream and format."""

    def __init__(self, request: web.Request, upstream: Upstream) -> None:
        self.request = request
        self.upstream = upstream
        self.preferences = scraper_preferences(request.headers.get("Accept", ""))
        self.response = web.StreamResponse()
        self.started = time.monotonic()
        self.sent = 0  # body bytes handed to the scraper's connection

    async def run(self, flights: Flights) -> None:
        """Stream the relabeled body; raises ScrapeError (or TimeoutError from the caller's deadline)."""
        upstream = self.upstream
        # A reload that changes the upstream replaces its client (and its rules, if they changed), so flights
        # never mix configurations.
        key = (upstream.client, upstream.rules, self.preferences.openmetrics, self.preferences.utf8_names)
        follower = flights.follower(
            key,
            lambda flight: upstream_pass(
                flight, upstream.client, upstream.rules, self.preferences, upstream.recorder
            ),
            reuse_seconds=upstream.config.min_interval,
        )
        try:
            async for piece in follower.pieces():
                await self._send(piece, follower.content_type)
            # Until the first relayed byte the head is held back: a failure before it is still a clean 502.
            await self._send(b"", follower.content_type)
        finally:
            follower.leave()

    async def _send(self, data: bytes, content_type: str) -> None:
        if not self.response.prepared:
            self.response.headers["Content-Type"] = content_type
            await self.response.prepare(self.request)
        if data:
            await self.response.write(data)
            self.sent += len(data)

    def record(self, error: ScrapeError | None) -> None:
        """Report the finished scrape: counted in the metrics, kept for the landing page."""
        aborted = error is not None and self.response.prepared and not isinstance(error, ScraperGoneError)
        outcome = ScrapeOutcome(
            at=time.time(),
            duration=time.monotonic() - self.started,
            ok=error is None,
            relayed_bytes=self.sent,
            reason=error.reason if error else "",
            explanation=error.explanation() if error else "",
            aborted=aborted,
        )
        self.upstream.recorder.scrape_finished(outcome, error)


async def self_metrics(request: web.Request) -> web.Response:
    """The relay's own metrics, never mixed with relayed ones."""
    preferences = scraper_preferences(request.headers.get("Accept", ""))
    body, content_type = request.app[RUNTIME_KEY].metrics.exposition(preferences.openmetrics)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def healthy(_request: web.Request) -> web.Response:
    """200 while the process serves."""
    return _text(200, "OK")


async def ready(request: web.Request) -> web.Response:
    """200 once the configuration is loaded and the relay serves; 503 before that and while shutting down."""
    if request.app[RUNTIME_KEY].ready():
        return _text(200, "OK")
    return _text(503, "not ready")


async def reload(request: web.Request) -> web.Response:
    """Reload the configuration; the old one stays in force when the new one has any problem."""
    try:
        request.app[RUNTIME_KEY].reload()
    except ConfigError as exc:
        log.error("configuration reload failed; keeping the running configuration", extra={"error": str(exc)})
        return _text(500, f"reload failed, running configuration kept:\n{exc}")
    return _text(200, "configuration reloaded")


async def landing_page(request: web.Request) -> web.Response:
    """HTML overview of the upstreams and their latest scrape."""
    return web.Response(text=landing.render(request.app[RUNTIME_KEY]), content_type="text/html")


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")
