"""The relay as a real child process (`python -m relay`), its own metrics, and its memory from /proc."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.processes import free_port, memory_status, running_process, write_file

SETTLE_SECONDS = 2.0
PYTHON_ENGINE = {"RELAY_NO_EXTENSIONS": "1"}  # the relay then uses its Python line engine


@dataclass(frozen=True)
class RelayProcess:
    """A running relay: its pid and the base URL it serves on."""

    pid: int
    base_url: str

    @property
    def metrics_url(self) -> str:
        """The relayed body of the first upstream."""
        return f"{self.base_url}/metrics"

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM in bytes."""
        return memory_status(self.pid)

    async def self_metric(self, session: aiohttp.ClientSession, name: str) -> float:
        """The sum of a metric's samples on /relay/metrics (0 if it has none)."""
        async with session.get(f"{self.base_url}/relay/metrics") as response:
            text = await response.text()
        total = 0.0
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series == name or series.startswith(name + "{"):
                total += float(value)
        return total

    async def engine(self, session: aiohttp.ClientSession) -> str:
        """The line engine the relay runs: the `engine` label of metrics_relay_build_info."""
        async with session.get(f"{self.base_url}/relay/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith("metrics_relay_build_info{"):
                _, found, rest = line.partition('engine="')
                if found:
                    return rest.split('"', 1)[0]
        return "unknown"

    async def settled_metric(self, session: aiohttp.ClientSession, name: str, before: float) -> float:
        """The metric once the relay has counted a finished scrape: changed from `before` and equal in two
        reads 50 ms apart (a relay may count a scrape just after its body ends), or as it is after 2 s."""
        deadline = time.monotonic() + SETTLE_SECONDS
        previous = await self.self_metric(session, name)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            current = await self.self_metric(session, name)
            if current == previous and current != before:
                return current
            previous = current
        return previous


@asynccontextmanager
async def running_relay(
    config_text: str, directory: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[RelayProcess]:
    """`python -m relay` for `config_text` (written into `directory`) on a free port of 127.0.0.1; `env` is
    added to its environment (`PYTHON_ENGINE` makes it use the Python line engine)."""
    config_file = write_file(directory / "relay.yml", config_text)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "relay",
        f"--config.file={config_file}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=error",
    ]
    async with running_process(command, [port], directory / "relay.log", env) as process:
        yield RelayProcess(process.pid, f"http://127.0.0.1:{port}")
