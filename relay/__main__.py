"""The command line: flags, subcommands, logging, the event loop (uvloop when present), the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from relay import __version__, kubeconfig_secret_command, logs, relabel_test_command
from relay.errors import ConfigError
from relay.inbound import load_web_config
from relay.lifecycle import (
    DEFAULT_SHUTDOWN_DELAY_SECONDS,
    DEFAULT_SHUTDOWN_GRACE_SECONDS,
    RelayServer,
    ServeOptions,
    serve,
)
from relay.loading import check_file
from relay.units import parse_duration

log = logging.getLogger("relay")

DEFAULT_LISTEN_ADDRESS = ":9795"
DEMO_LISTEN_ADDRESS = "127.0.0.1:9795"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags of INTERFACE.md, in the dotted style of Prometheus exporters."""
    parser = argparse.ArgumentParser(
        prog="metrics-relay",
        description="Scrape a client-certificate-protected Prometheus endpoint over mTLS, relabel it "
        "while streaming, and serve it on plain HTTP.",
        epilog="subcommands: 'metrics-relay relabel-test --help' (apply an upstream's rules offline), "
        "'metrics-relay kubeconfig-secret --help' (the client certificate Secret from a kubeconfig)",
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
    parser.add_argument(
        "--web.shutdown-delay",
        dest="shutdown_delay",
        type=_duration_flag,
        default=DEFAULT_SHUTDOWN_DELAY_SECONDS,
        metavar="DURATION",
        help="after SIGTERM, keep serving (not ready) this long before closing the listener, so that "
        f"endpoints drop the pod first (default {DEFAULT_SHUTDOWN_DELAY_SECONDS:g}s)",
    )
    parser.add_argument(
        "--web.shutdown-grace-period",
        dest="shutdown_grace",
        type=_duration_flag,
        default=DEFAULT_SHUTDOWN_GRACE_SECONDS,
        metavar="DURATION",
        help="then give in-flight scrapes this long to finish before cutting them "
        f"(default {DEFAULT_SHUTDOWN_GRACE_SECONDS:g}s; delay plus grace should stay under the pod's "
        "terminationGracePeriodSeconds)",
    )
    parser.add_argument(
        "--web.max-requests",
        dest="max_requests",
        type=_count_flag,
        default=0,
        metavar="N",
        help="at most N relayed scrapes at once; more get 503 (default 0: no bound)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        metavar="PATH",
        help="TLS and basic auth for every endpoint, in the Prometheus exporter-toolkit format "
        "(tls_server_config, http_server_config.headers, basic_auth_users); re-read when it changes. "
        "Absent: plain HTTP, no auth",
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


def _duration_flag(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count_flag(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces, host None) into host and port."""
    host, separator, port_text = address.rpartition(":")
    if not separator or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    return host or None, int(port_text)


def check_config(path: Path, web_config_file: Path | None = None) -> int:
    """--config.check: print OK and a summary (warnings on stderr), or every problem with its location
    (of the web configuration file too, when one is given); the exit code."""
    problems = []
    try:
        checked = check_file(path)
    except ConfigError as exc:
        problems.append(str(exc))
    if web_config_file is not None:
        try:
            load_web_config(web_config_file)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    for warning in checked.config.warnings:
        print(f"warning: {warning.render(checked.config.source)}", file=sys.stderr)
    print("OK: " + "\n".join(checked.summary()))
    if web_config_file is not None:
        print(f"  web configuration {web_config_file}: OK")
    return 0


async def demo(options: ServeOptions) -> int:
    """Start the aggregator stand-in with fresh certificates, write a relay config for it, run the relay."""
    from relay.demo import running_aggregator  # noqa: PLC0415 - the demo's code is loaded only for --demo

    with tempfile.TemporaryDirectory(prefix="metrics-relay-demo-") as workdir:
        async with running_aggregator(Path(workdir)) as aggregator:
            config_path = Path(workdir) / "relay.yml"
            config_path.write_text(aggregator.relay_config_yaml(), encoding="utf-8")

            def announce(server: RelayServer) -> None:
                base = server.urls[0]
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

            return await serve(config_path, options, on_started=announce)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `metrics-relay` and `python -m relay`."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["relabel-test"]:
        return relabel_test_command.main(arguments[1:])
    if arguments[:1] == ["kubeconfig-secret"]:
        return kubeconfig_secret_command.main(arguments[1:])
    args = parse_args(arguments)
    logs.configure(args.log_level, args.log_format)
    if args.config_check:
        return check_config(args.config_file, args.web_config_file)
    options = ServeOptions(
        host=args.host,
        port=args.port,
        shutdown_delay=args.shutdown_delay,
        shutdown_grace=args.shutdown_grace,
        max_requests=args.max_requests,
        web_config_file=args.web_config_file,
    )
    coroutine = demo(options) if args.demo else serve(args.config_file, options)
    try:
        with _event_loop() as runner:
            return runner.run(coroutine)
    except ConfigError as exc:
        log.error("cannot start: invalid configuration", extra={"error": str(exc)})
        return 1
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1


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
