"""Facts about the machine and the command a benchmark ran with, printed under every table."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import ssl
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@dataclass(frozen=True)
class MachineFacts:
    """What decides the numbers: cores, CPU, Python and the libraries on the data path."""

    nproc: int
    cpu_model: str
    python: str
    openssl: str
    event_loop: str
    nginx: str
    relay_source: str

    def line(self) -> str:
        """One line for a table footer."""
        return (
            f"nproc {self.nproc}, CPU {self.cpu_model}, Python {self.python}, {self.openssl}, "
            f"loop {self.event_loop}, {self.nginx}; relay {self.relay_source}"
        )


@cache
def machine_facts() -> MachineFacts:
    """Read the facts once per run."""
    return MachineFacts(
        nproc=len(os.sched_getaffinity(0)),
        cpu_model=_cpu_model(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        openssl=ssl.OPENSSL_VERSION,
        event_loop=_event_loop_name(),
        nginx=_nginx_version(),
        relay_source=_relay_source(),
    )


def command_line() -> str:
    """The command that is running, as it could be typed again."""
    return "python -m bench " + shlex.join(sys.argv[1:]) if len(sys.argv) > 1 else "python -m bench"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def _event_loop_name() -> str:
    try:
        return f"uvloop {version('uvloop')}"
    except PackageNotFoundError:
        return "asyncio"


def _relay_source() -> str:
    """Which relay code is measured: its folder and git commit, marked when relay/ has local changes."""
    import relay  # noqa: PLC0415 - located, not used

    folder = Path(relay.__file__).resolve().parent
    commit = _git(folder, "rev-parse", "--short", "HEAD")
    if not commit:
        return f"from {folder} (not a git checkout)"
    changed = _git(folder, "status", "--porcelain", "--", ".")
    return f"at {commit}" + (" with uncommitted changes in relay/" if changed else "")


def _git(folder: Path, *arguments: str) -> str:
    git = shutil.which("git")
    if git is None:
        return ""
    result = subprocess.run([git, "-C", str(folder), *arguments], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def _nginx_version() -> str:
    from bench.nginx import nginx_binary  # noqa: PLC0415 - nginx's module needs nothing of this one

    path = nginx_binary()
    if path is None:
        return "nginx not found"
    result = subprocess.run([str(path), "-v"], capture_output=True, text=True, check=False, timeout=10)
    return (result.stderr or result.stdout).strip().removeprefix("nginx version: ")
