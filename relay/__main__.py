"""The command line: flags, logging, the event loop (uvloop when present), signals, the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from relay import __version__, logs, pipeline, relabel_test_command
from relay.errors import ConfigError
from relay.loading import check_file, load_config
from relay.runtime import Runtime
from relay.server import create_app

log = logging.getLogger("relay")

DEFAULT_LISTEN_ADDRESS = ":9795"
DEMO_LISTEN_ADDRESS = "127.0.0.1:9795"
SHUTDOWN_TIMEOUT_SECONDS = 10.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags of INTERFACE.md, in the dotted style of Prometheus exporters."""
    parser = argparse.ArgumentParser(
        prog="metrics-relay",
        description="Scrape a client-certificate-protected Prometheus endpoint over mTLS, relabel it "
        "while streaming, and serve it on plain HTTP.",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        type=Path,
        metavar="PATH",
        help="YAML configuration file (required unless --demo)",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        metavar="HOST:PORT",
        help=f"where to serve HTTP; ':PORT' means all interfaces (default {DEFAULT_LISTEN_ADDRESS}, "
        f"with --demo {DEMO_LISTEN_ADDRESS})",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration and the files it names, print OK or every error, exit",
    )
    parser.add_argument("--log.level", dest="log_level", choices=list(logs.LEVELS), default="info")
    parser.add_argument("--log.format", dest="log_format", choices=logs.FORMATS, default="logfmt")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="start an embedded mTLS aggregator stand-in and a relay pointed at it",
    )
    parser.add_argument("--version", action="version", version=f"metrics-relay {__version__}")
    args = parser.parse_args(argv)
    if args.config_file is None and not args.demo:
        parser.error("--config.file is required (or use --demo)")
    if args.config_check and args.config_file is None:
        parser.error("--config.check needs --config.file")
    if args.listen_address is None:
        args.listen_address = DEMO_LISTEN_ADDRESS if args.demo else DEFAULT_LISTEN_ADDRESS
    try:
        args.host, args.port = parse_listen_address(args.listen_address)
    except ValueError as exc:
        parser.error(f"--web.listen-address: {exc}")
    return args


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces, host None) into host and port."""
    host, separator, port_text = address.rpartition(":")
    if not separator or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    return host or None, int(port_text)


def check_config(path: Path) -> int:
    """--config.check: print OK and a summary (warnings on stderr), or every problem with its location;
    the exit code."""
    try:
        checked = check_file(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in checked.config.warnings:
        print(f"warning: {warning.render(checked.config.source)}", file=sys.stderr)
    print("OK: " + "\n".join(checked.summary()))
    return 0


async def serve(
    config_path: Path, host: str | None, port: int, on_started: Callable[[list[Any]], None] | None = None
) -> None:
    """Run the relay until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
    runtime = Runtime(config_path=config_path, config=load_config(config_path))
    await runtime.start()
    runner = web.AppRunner(
        create_app(runtime),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload_from_signal, runtime)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info(
            "serving",
            extra={
                "addresses": " ".join(_url(address) for address in runner.addresses),
                "upstreams": ",".join(runtime.upstreams),
                "version": __version__,
                "engine": pipeline.default_engine,
            },
        )
        if on_started is not None:
            on_started(runner.addresses)
        await stop.wait()
        log.info("shutting down")
        runtime.shutting_down = True
    finally:
        await runner.cleanup()
        await runtime.close()


def _reload_from_signal(runtime: Runtime) -> None:
    try:
        runtime.reload()
    except ConfigError as exc:
        log.error("configuration reload failed; keeping the running configuration", extra={"error": str(exc)})


def _url(address: Sequence[object]) -> str:
    host, port = str(address[0]), address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def demo(host: str | None, port: int) -> None:
    """Start the aggregator stand-in with fresh certificates, write a relay config for it, run the relay."""
    from relay.demo import running_aggregator  # noqa: PLC0415 - the demo's code is loaded only for --demo

    with tempfile.TemporaryDirectory(prefix="metrics-relay-demo-") as workdir:
        async with running_aggregator(Path(workdir)) as aggregator:
            config_path = Path(workdir) / "relay.yml"
            config_path.write_text(aggregator.relay_config_yaml(), encoding="utf-8")

            def announce(addresses: list[Any]) -> None:
                base = _url(addresses[0])
                links = "\n".join(f"    {url}\n        {what}" for url, what in aggregator.relay_links(base))
                print(
                    f"""
metrics-relay demo
  aggregator stand-in (mTLS, client certificate required): {aggregator.url}?hosting=true
  relay configuration written to:                          {config_path}
    (read its metric_relabel_configs there: each rule says why it is in)
  open:
{links}
  try: curl -s {base}/metrics | head
       curl -s -H 'Accept: application/openmetrics-text' {base}/metrics | grep -e trace_id -e EOF
  Ctrl-C stops both.
""",
                    flush=True,
                )

            await serve(config_path, host, port, on_started=announce)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `metrics-relay` and `python -m relay`."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["relabel-test"]:
        return relabel_test_command.main(arguments[1:])
    args = parse_args(arguments)
    logs.configure(args.log_level, args.log_format)
    if args.config_check:
        return check_config(args.config_file)
    coroutine = demo(args.host, args.port) if args.demo else serve(args.config_file, args.host, args.port)
    try:
        with _event_loop() as runner:
            runner.run(coroutine)
    except ConfigError as exc:
        log.error("cannot start: invalid configuration", extra={"error": str(exc)})
        return 1
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    return 0


@contextlib.contextmanager
def _event_loop() -> Iterator[asyncio.Runner]:
    """An asyncio.Runner on uvloop when it is importable (it is a dependency, but optional by platform)."""
    try:
        import uvloop  # noqa: PLC0415 - optional at run time

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner


if __name__ == "__main__":
    sys.exit(main())
