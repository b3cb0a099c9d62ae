"""`python -m bench [--quick] [core] [e2e] [memory] [concurrency] [peers]`: run benchmarks, print tables."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench.concurrency import ConcurrencySettings, run_concurrency
from bench.core import CoreSettings, run_core
from bench.endtoend import EndToEndSettings, run_end_to_end
from bench.machine import command_line, machine_facts
from bench.memory import MemorySettings, run_memory
from bench.scrapers import PeersSettings, run_peers

BENCHMARKS = ("core", "e2e", "memory", "concurrency", "peers")
MiB = 2**20


@dataclass(frozen=True)
class Plan:
    """The settings of every benchmark for one run."""

    core: CoreSettings
    e2e: EndToEndSettings
    memory: MemorySettings
    concurrency: ConcurrencySettings
    peers: PeersSettings


FULL = Plan(
    core=CoreSettings(built_payload_bytes=50_000_000, cold_runs=3, warm_runs=3, parser_input_bytes=8_000_000),
    e2e=EndToEndSettings(payload_bytes=50_000_000, rounds=7),
    memory=MemorySettings(cycled_bytes=1024 * MiB, unique_bytes=64 * MiB),
    concurrency=ConcurrencySettings(concurrent=20, single_runs=5),
    peers=PeersSettings(payload_bytes=50_000_000, later_scrapes=4),
)
QUICK = Plan(
    core=CoreSettings(built_payload_bytes=10_000_000, cold_runs=1, warm_runs=2, parser_input_bytes=3_200_000),
    e2e=EndToEndSettings(payload_bytes=10_000_000, rounds=2),
    memory=MemorySettings(cycled_bytes=128 * MiB, unique_bytes=8 * MiB),
    concurrency=ConcurrencySettings(concurrent=20, single_runs=3),
    peers=PeersSettings(payload_bytes=10_000_000, later_scrapes=3),
)


def parse_args() -> argparse.Namespace:
    """Which benchmarks to run, and how big."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "benchmarks", nargs="*", metavar="BENCHMARK", help=f"any of {', '.join(BENCHMARKS)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller bodies, fewer runs (about 1 minute)")
    parser.add_argument(
        "--unique-mib",
        type=int,
        metavar="N",
        help="size of the memory benchmark's all-unique body for rewrite rules (default 64, with --quick 8)",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.benchmarks) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (choose from {', '.join(BENCHMARKS)})")
    args.benchmarks = args.benchmarks or list(BENCHMARKS)
    return args


def main() -> None:
    """Run the selected benchmarks in order and print each table as it is done."""
    args = parse_args()
    plan = QUICK if args.quick else FULL
    if args.unique_mib:
        plan = replace(plan, memory=replace(plan.memory, unique_bytes=args.unique_mib * MiB))
    started = time.monotonic()
    print(
        f"# metrics-relay benchmarks\n\n- machine: {machine_facts().line()}\n- command: `{command_line()}`\n",
        flush=True,
    )
    if "core" in args.benchmarks:
        run_core(plan.core).print()
    with tempfile.TemporaryDirectory(prefix="metrics-relay-bench-") as workdir, _runner() as runner:
        runner.run(_run_servers(args.benchmarks, plan, Path(workdir)))
    print(f"total run time {time.monotonic() - started:.0f} s")


async def _run_servers(benchmarks: list[str], plan: Plan, workdir: Path) -> None:
    """The benchmarks with real servers, each in a folder of its own."""
    if "e2e" in benchmarks:
        (await run_end_to_end(plan.e2e, workdir / "e2e")).print()
    if "memory" in benchmarks:
        (await run_memory(plan.memory, workdir / "memory")).print()
    if "concurrency" in benchmarks:
        (await run_concurrency(plan.concurrency, workdir / "concurrency")).print()
    if "peers" in benchmarks:
        (await run_peers(plan.peers, workdir / "peers")).print()


def _runner() -> asyncio.Runner:
    """An asyncio.Runner on uvloop when it is installed (as the relay runs), else the default loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        import uvloop  # noqa: PLC0415 - optional, as in the relay
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    return asyncio.Runner(loop_factory=factory)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        sys.exit(130)
