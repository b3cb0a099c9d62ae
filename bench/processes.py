"""Child processes of a benchmark: free ports, waiting until one listens, stopping, and memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

STARTUP_SECONDS = 20.0
STOP_SECONDS = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS just gave out (free unless someone takes it meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until_listening(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    """Return once 127.0.0.1:port accepts connections; raise with the log's tail if the process dies first."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{_tail(log_file)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise RuntimeError(f"{process.args!r} did not listen on port {port} in {STARTUP_SECONDS:g}s")


@asynccontextmanager
async def running_process(
    command: Sequence[str], ports: Sequence[int], log_file: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Start `command` (output into `log_file`, `env` added to this process's environment), wait until it
    listens on every port; stop it on exit."""
    process = start(command, log_file, env)
    try:
        for port in ports:
            await wait_until_listening(process, port, log_file)
        yield process
    finally:
        stop(process)


def start(
    command: Sequence[str], log_file: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` with its output appended to `log_file`; `env` is added to our environment."""
    environment = {**os.environ, **env} if env else None
    with log_file.open("ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=environment)


def write_file(path: Path, content: str | bytes) -> Path:
    """Write a file (text as UTF-8), creating its folder; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited after STOP_SECONDS."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def memory_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes, from /proc/<pid>/status."""
    sizes: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, unit = value.split()
            sizes[key] = int(number) * (1024 if unit == "kB" else 1)
    return sizes


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
