"""The relay's life as a process: SIGTERM drains (not ready, linger, grace), a second signal, PID 1, the bound
on concurrent scrapes, and signal handlers given back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from relay.lifecycle import ServeOptions, serve
from tests.support import Handler, body_handler, config_yaml, running_relay, running_upstream, trickle

BODY = b"# TYPE up gauge\nup 1\n" + b"".join(b'filler{n="%d"} %d\n' % (i, i) for i in range(2000))


@dataclass
class RelayProcess:
    """The relay as a child process with JSON logs, its URL, and its log lines as they come."""

    process: asyncio.subprocess.Process
    base_url: str
    lines: list[dict[str, str]] = field(default_factory=list)

    async def wait_for_log(self, message: str, within: float = 10) -> dict[str, str]:
        async with asyncio.timeout(within):
            while True:
                for line in self.lines:
                    if line["msg"] == message:
                        return line
                await asyncio.sleep(0.02)

    async def exit_code(self, within: float) -> int:
        async with asyncio.timeout(within):
            return await self.process.wait()


@contextlib.asynccontextmanager
async def relay_process(
    config: Path, *flags: str, prefix: tuple[str, ...] = ()
) -> AsyncIterator[RelayProcess]:
    """Start `python -m relay` on a free port (under `prefix`, such as unshare, if given); stop it after."""
    process = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "relay",
        f"--config.file={config}",
        "--web.listen-address=127.0.0.1:0",
        "--log.format=json",
        *flags,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[dict[str, str]] = []
    serving: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read_logs() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = json.loads(raw)
            lines.append(line)
            if line["msg"] == "serving" and not serving.done():
                serving.set_result(line["addresses"])
        if not serving.done():
            serving.set_exception(AssertionError(f"the relay exited before serving: {lines}"))

    reader = asyncio.create_task(read_logs())
    try:
        async with asyncio.timeout(20):
            base_url = await serving
        yield RelayProcess(process, base_url, lines)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        await reader


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read()


def slow_body(seconds: float) -> Handler:
    """An upstream handler that sends BODY in pieces over `seconds`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        await response.prepare(request)
        pieces = 10
        step = len(BODY) // pieces + 1
        for start in range(0, len(BODY), step):
            await response.write(BODY[start : start + step])
            await asyncio.sleep(seconds / pieces)
        await response.write_eof()
        return response

    return handle


async def test_a_scrape_in_flight_at_sigterm_completes(pki, tmp_path):
    """SIGTERM while a scrape streams: it gets its whole body, then the relay exits 0."""
    async with running_upstream(pki.server_context(), slow_body(1.5)) as upstream:
        config = tmp_path / "relay.yml"
        config.write_text(config_yaml(upstream.url, pki.client_files()))
        async with relay_process(
            config, "--web.shutdown-delay=0", "--web.shutdown-grace-period=10s"
        ) as relay:
            scrape = asyncio.create_task(get(f"{relay.base_url}/metrics"))
            await asyncio.sleep(0.4)
            relay.process.send_signal(signal.SIGTERM)
            status, body = await scrape
            code = await relay.exit_code(within=10)
    assert (status, code) == (200, 0)
    assert body == BODY


async def test_a_scrape_past_the_grace_period_is_cut(pki, tmp_path):
    """A scrape that outlives the grace period ends as a broken body (never a clean short one), logged as
    cut by the shutdown; exit 0."""

    async def endless(request: web.Request) -> web.StreamResponse:
        return await trickle(request, BODY[:5000], pause=0.05)

    async with running_upstream(pki.server_context(), endless) as upstream:
        config = tmp_path / "relay.yml"
        config.write_text(config_yaml(upstream.url, pki.client_files(), "    timeout: 60s\n"))
        async with relay_process(config, "--web.shutdown-delay=0", "--web.shutdown-grace-period=1s") as relay:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{relay.base_url}/metrics") as response,
            ):
                await response.content.readexactly(100)
                relay.process.send_signal(signal.SIGTERM)
                started = asyncio.get_running_loop().time()
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()
                cut_after = asyncio.get_running_loop().time() - started
            code = await relay.exit_code(within=10)
            failure = await relay.wait_for_log("scrape failed")
    assert code == 0
    assert 0.8 < cut_after < 5
    assert failure["reason"] == "shutdown"  # counted as a failure the scraper saw, not as the scraper leaving
    assert int(failure["after_bytes"]) >= 100


async def test_during_the_shutdown_delay_the_relay_is_unready_but_serves(pki, tmp_path):
    """After SIGTERM, /-/ready is 503 at once while /metrics still answers, until the delay ends."""
    async with running_upstream(pki.server_context(), body_handler(BODY)) as upstream:
        config = tmp_path / "relay.yml"
        config.write_text(config_yaml(upstream.url, pki.client_files()))
        async with relay_process(config, "--web.shutdown-delay=2s") as relay:
            assert (await get(f"{relay.base_url}/-/ready"))[0] == 200
            relay.process.send_signal(signal.SIGTERM)
            await relay.wait_for_log("shutting down")
            ready = (await get(f"{relay.base_url}/-/ready"))[0]
            metrics = await get(f"{relay.base_url}/metrics")
            code = await relay.exit_code(within=10)
    assert ready == 503
    assert metrics == (200, BODY)
    assert code == 0


async def test_a_second_signal_exits_at_once(pki, tmp_path):
    """A second SIGTERM during a long shutdown delay ends the process at once, with exit code 1."""
    config = tmp_path / "relay.yml"
    config.write_text(config_yaml("https://127.0.0.1:1/metrics", pki.client_files()))
    async with relay_process(config, "--web.shutdown-delay=60s") as relay:
        relay.process.send_signal(signal.SIGTERM)
        await relay.wait_for_log("shutting down")
        relay.process.send_signal(signal.SIGTERM)
        code = await relay.exit_code(within=5)
    assert code == 1
    assert any(line["msg"] == "second stop signal: exiting at once" for line in relay.lines)


def _unshare() -> str:
    """`unshare`, where this machine lets us make a PID namespace (root); skip elsewhere unless CI."""
    path = shutil.which("unshare")
    if path is None or os.geteuid() != 0:
        if os.environ.get("CI") and path is None:
            pytest.fail("unshare is missing (util-linux)")
        pytest.skip("needs unshare and root to run the relay as PID 1")
    return path


async def test_sigterm_stops_the_relay_running_as_pid_1(pki, tmp_path):
    """As PID 1 of its own PID namespace (as in a container) the relay still drains on SIGTERM and exits 0."""
    unshare = _unshare()
    config = tmp_path / "relay.yml"
    config.write_text(config_yaml("https://127.0.0.1:1/metrics", pki.client_files()))
    async with relay_process(
        config, "--web.shutdown-delay=0", prefix=(unshare, "--pid", "--fork", "--kill-child")
    ) as relay:
        inner = _only_child(relay.process.pid)
        assert _namespace_pid(inner) == 1
        os.kill(inner, signal.SIGTERM)
        code = await relay.exit_code(within=10)
        shut_down = await relay.wait_for_log("shutting down")
    assert code == 0
    assert shut_down["level"] == "info"


def _only_child(pid: int) -> int:
    (child,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(child)


def _namespace_pid(pid: int) -> int:
    """The process's PID inside its own namespace (the last NSpid value)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid in /proc status")


async def test_scrapes_beyond_max_requests_get_503(pki, tmp_path):
    """With --web.max-requests=1 a second concurrent scrape is turned away with 503 and counted."""
    async with (
        running_upstream(pki.server_context(), slow_body(1.0)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path, max_requests=1) as relay,
    ):
        first = asyncio.create_task(get(f"{relay.base_url}/metrics"))
        await asyncio.sleep(0.3)
        second = await get(f"{relay.base_url}/metrics")
        assert (await first) == (200, BODY)
        third = await get(f"{relay.base_url}/metrics")
        rejected = relay.runtime.metrics.registry.get_sample_value(
            "metrics_relay_scrapes_rejected_total", {"upstream": "test"}
        )
    assert second[0] == 503
    assert b"--web.max-requests" in second[1]
    assert third == (200, BODY)
    assert rejected == 1


async def test_serve_gives_the_signal_handlers_back(pki, tmp_path):
    """In-process serve() holds its signal handlers only while it runs: afterwards SIGTERM is as before."""
    config = tmp_path / "relay.yml"
    config.write_text(config_yaml("https://127.0.0.1:1/metrics", pki.client_files()))
    loop = asyncio.get_running_loop()

    def ours(_number: int, _frame: object) -> None:
        """A handler of the embedding program's own."""

    before = signal.signal(signal.SIGHUP, ours)
    try:
        code = await serve(
            config,
            ServeOptions(host="127.0.0.1", port=0, shutdown_delay=0),
            on_started=lambda _server: loop.call_soon(os.kill, os.getpid(), signal.SIGTERM),
        )
        after = signal.getsignal(signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, before)
    assert code == 0
    assert after is ours  # restored, not reset to the default
