"""The relay's life as a server: start, serve, reload on SIGHUP, and drain on SIGTERM (linger, grace, stop).

One lifecycle serves the command line and the tests: `RelayServer` starts and stops the relay; `serve` adds
the signals. Shutdown follows what Kubernetes needs: at the first SIGTERM the relay turns unready at once but
keeps serving for `shutdown_delay` (endpoints take a moment to drop the pod), then stops listening and gives
in-flight scrapes `grace` seconds to finish; what is still running then is cut (the scraper sees a broken
body, never a clean short one). A second signal skips what is left and exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiohttp import web

from relay import __version__, pipeline
from relay.errors import ConfigError
from relay.inbound import InboundProtection
from relay.loading import load_config
from relay.runtime import Runtime
from relay.server import create_app

log = logging.getLogger("relay")

DEFAULT_SHUTDOWN_DELAY_SECONDS = 5.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20.0
"""Delay plus grace stay under Kubernetes' default terminationGracePeriodSeconds of 30."""

EXIT_OK = 0
EXIT_FORCED = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Where and how the relay serves; the defaults are the command line's."""

    host: str | None = None
    port: int = 9795
    shutdown_delay: float = DEFAULT_SHUTDOWN_DELAY_SECONDS
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE_SECONDS
    max_requests: int = 0  # relayed scrapes at once; 0: no bound
    web_config_file: Path | None = None  # TLS and basic auth for the listener; None: plain HTTP, open


class RelayServer:
    """A running relay: its state, its aiohttp runner and its listening site."""

    def __init__(self, config_path: Path, options: ServeOptions) -> None:
        self.config_path = config_path
        self.options = options
        self.runtime = Runtime(config_path=config_path, config=load_config(config_path))
        self.protection = None
        if options.web_config_file is not None:
            gauge = self.runtime.metrics.web_config_reload_success
            self.protection = InboundProtection(options.web_config_file, lambda ok: gauge.set(1 if ok else 0))
        self._runner = web.AppRunner(
            create_app(self.runtime, max_requests=options.max_requests, protection=self.protection),
            handler_cancellation=True,
            access_log=None,
            # aiohttp waits this long for running handlers once the listener is closed, then cancels them.
            shutdown_timeout=options.shutdown_grace,
        )
        self._tls = False

    @property
    def urls(self) -> list[str]:
        """The `http://host:port` of every address the relay listens on."""
        scheme = "https" if self._tls else "http"
        return [_url(scheme, address) for address in self._runner.addresses]

    async def start(self) -> None:
        """Load the upstreams and start listening."""
        await self.runtime.start()
        try:
            await self._runner.setup()
            context = self.protection.listener_context() if self.protection is not None else None
            self._tls = context is not None
            await web.TCPSite(self._runner, self.options.host, self.options.port, ssl_context=context).start()
        except BaseException:
            await self.close()
            raise
        log.info(
            "serving",
            extra={
                "addresses": " ".join(self.urls),
                "upstreams": ",".join(self.runtime.upstreams),
                "version": __version__,
                "engine": pipeline.default_engine,
            },
        )

    async def drain(self) -> None:
        """Turn unready, keep serving for the shutdown delay, then close (in-flight scrapes get the grace)."""
        self.runtime.shutting_down = True
        options = self.options
        log.info(
            "shutting down",
            extra={"delay": f"{options.shutdown_delay:g}s", "grace": f"{options.shutdown_grace:g}s"},
        )
        await asyncio.sleep(options.shutdown_delay)
        await self.close()

    async def close(self) -> None:
        """Stop listening, let in-flight scrapes finish within the grace period, release the upstreams."""
        try:
            await self._runner.cleanup()
        finally:
            await self.runtime.close()

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()


async def serve(
    config_path: Path, options: ServeOptions, on_started: Callable[[RelayServer], None] | None = None
) -> int:
    """Run the relay until SIGTERM/SIGINT (SIGHUP reloads); the exit code.

    The signal handlers are the loop's while the relay runs, and removed again when it returns.
    """
    loop = asyncio.get_running_loop()
    stop, again = asyncio.Event(), asyncio.Event()

    def on_stop_signal() -> None:
        if stop.is_set():
            log.warning("second stop signal: exiting at once")
            again.set()
        stop.set()

    server = RelayServer(config_path, options)
    # Before the listener opens: whoever sees "serving" may signal at once.
    previous = {number: signal.getsignal(number) for number in (*_STOP_SIGNALS, signal.SIGHUP)}
    for number in _STOP_SIGNALS:
        loop.add_signal_handler(number, on_stop_signal)
    loop.add_signal_handler(signal.SIGHUP, _reload, server.runtime)
    try:
        await server.start()
        if on_started is not None:
            on_started(server)
        await stop.wait()
        drain = asyncio.create_task(server.drain())
        second_signal = asyncio.create_task(again.wait())
        await asyncio.wait({drain, second_signal}, return_when=asyncio.FIRST_COMPLETED)
        if drain.done():
            second_signal.cancel()
            drain.result()
            return EXIT_OK
        drain.cancel()  # what still runs is cut when the loop closes: scrapers see broken bodies
        await asyncio.gather(drain, return_exceptions=True)
        return EXIT_FORCED
    finally:
        for number, handler in previous.items():
            loop.remove_signal_handler(number)
            signal.signal(number, handler)  # as they were before, not just the defaults


def _reload(runtime: Runtime) -> None:
    try:
        runtime.reload()
    except ConfigError as exc:
        log.error("configuration reload failed; keeping the running configuration", extra={"error": str(exc)})


def _url(scheme: str, address: object) -> str:
    host, port = address[0], address[1]  # type: ignore[index]  # aiohttp types addresses as Any
    return f"{scheme}://[{host}]:{port}" if ":" in str(host) else f"{scheme}://{host}:{port}"
