"""Real Prometheus as a test oracle: its process and configuration, HTTP API, stored series, and promtool."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

from tests.support import ClientFiles

# Series Prometheus writes itself for every target (without --enable-feature=extra-scrape-metrics).
SYNTHETIC_NAMES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
)
# Target labels Prometheus adds to every stored series; the comparison ignores them.
TARGET_LABELS = frozenset({"job", "instance"})

LabelSet = tuple[tuple[str, str], ...]
# A stored exemplar: its series' labels (job and instance aside), its own labels, its timestamp (seconds).
ExemplarKey = tuple[LabelSet, LabelSet, str]
Rules = Sequence[Mapping[str, Any]]
Key = TypeVar("Key", LabelSet, ExemplarKey)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape_job(
    name: str,
    target: str,
    path: str,
    *,
    rules: Rules = (),
    tls: ClientFiles | None = None,
    interval_seconds: float = 1.0,
) -> dict[str, Any]:
    """One `scrape_configs` entry: `target` (host:port) at `path`, over mTLS when `tls` is given.

    The scrape timeout is the whole interval: Prometheus does not allow more.
    """
    interval = f"{round(interval_seconds * 1000)}ms"
    job: dict[str, Any] = {
        "job_name": name,
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "metrics_path": path,
        "static_configs": [{"targets": [target]}],
    }
    if tls is not None:
        job["scheme"] = "https"
        job["tls_config"] = {
            "ca_file": str(tls.ca_file),
            "cert_file": str(tls.cert_file),
            "key_file": str(tls.key_file),
        }
    if rules:
        job["metric_relabel_configs"] = [dict(rule) for rule in rules]
    return job


def prometheus_config(jobs: Iterable[Mapping[str, Any]]) -> str:
    """A whole prometheus.yml with these scrape jobs (each sets its own interval)."""
    document = {"global": {"evaluation_interval": "1m"}, "scrape_configs": list(jobs)}
    return yaml.safe_dump(document, sort_keys=False)


class OracleError(AssertionError):
    """Prometheus did not start, stop, answer or scrape as the test needs; the message says what it saw."""


@dataclass
class Prometheus:
    """A running Prometheus process and its HTTP API at `base_url`."""

    base_url: str
    process: asyncio.subprocess.Process
    config_path: Path
    log_path: Path
    session: aiohttp.ClientSession

    def log_tail(self, lines: int = 20) -> str:
        """The last lines Prometheus wrote to stdout/stderr."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` member of a successful answer."""
        url = f"{self.base_url}/api/v1/{path}"
        async with self.session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=30)) as answer:
            document = await answer.json(content_type=None)
        if document.get("status") != "success":
            raise OracleError(f"Prometheus API {path} {params}: {answer.status} {document}")
        return document["data"]

    async def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """An instant query evaluated at `at` (Unix seconds); the vector's or matrix's elements."""
        data = await self.api("query", query=expr, time=f"{at:.3f}")
        if data["resultType"] not in ("vector", "matrix"):
            raise OracleError(f"{expr!r} gave a {data['resultType']}, not a vector or matrix")
        result: list[dict[str, Any]] = data["result"]
        return result

    async def target_health(self) -> dict[str, tuple[str, str]]:
        """Per job: the health of its (single) target and its last scrape error."""
        data = await self.api("targets", state="active")
        return {
            target["labels"]["job"]: (target["health"], target["lastError"])
            for target in data["activeTargets"]
        }

    async def wait_until_up(
        self, jobs: Iterable[str], within: float, *, give_up_after: float | None = None
    ) -> dict[str, str]:
        """Wait until every job has had a good scrape (`up == 1` now); {} then.

        With `give_up_after`: once every job still missing is down (its latest scrape failed, and not by
        a timeout, which load can cause), they get that many seconds more to come up; then their latest
        scrape errors are returned, by job, instead of failing. A body Prometheus refuses fails every
        scrape: the test can tell which and why.
        """
        wanted = set(jobs)
        missing = wanted
        all_down_since: float | None = None
        try:
            async with asyncio.timeout(within):
                while True:
                    result = await self.query("up == 1", time.time())
                    missing = wanted - {element["metric"]["job"] for element in result}
                    if not missing:
                        return {}
                    if self.process.returncode is not None:
                        raise OracleError(
                            f"Prometheus exited ({self.process.returncode}):\n{self.log_tail()}"
                        )
                    if give_up_after is not None:
                        health = await self.target_health()
                        if all(_failed_for_good(health.get(job)) for job in missing):
                            all_down_since = all_down_since or time.monotonic()
                            if time.monotonic() - all_down_since >= give_up_after:
                                return {job: health[job][1] for job in sorted(missing)}
                        else:
                            all_down_since = None
                    await asyncio.sleep(0.25)
        except TimeoutError:
            health = await self.target_health()
            details = "\n".join(
                f"  {job}: {health.get(job, ('no target', ''))}" for job in sorted(missing)[:20]
            )
            raise OracleError(
                f"{len(missing)} of {len(wanted)} jobs not up after {within:g}s:\n{details}\n"
                f"Prometheus log:\n{self.log_tail()}"
            ) from None

    async def last_time_all_up(self, jobs: Iterable[str]) -> float:
        """The latest time at which every job's latest scrape was a good one; call once scraping stopped.

        A scrape's samples and its `up` share a timestamp, so an instant query at this time sees, for
        each job, the samples of a good scrape. Only stopped scraping makes this final: a scrape in
        flight can commit after a query and still be stamped before its evaluation time.
        """
        wanted = sorted(set(jobs))
        result = await self.query("up[1h]", time.time())
        history = {element["metric"]["job"]: element["values"] for element in result}
        lacking = [job for job in wanted if job not in history]
        if lacking:
            raise OracleError(f"no `up` at all for {len(lacking)} jobs, e.g. {lacking[:5]}")
        good_times = sorted({at for job in wanted for at, up in history[job] if up == "1"}, reverse=True)
        for candidate in good_times:
            if all(_latest_before(history[job], candidate) == "1" for job in wanted):
                return float(candidate)
        raise OracleError(f"no moment at which all {len(wanted)} jobs had a good latest scrape: {history}")

    async def reload(self, config_text: str, within: float = 15) -> None:
        """Apply a new configuration (SIGHUP); return once its jobs are exactly the active targets' jobs."""
        _write(self.config_path, config_text)
        wanted = {job["job_name"] for job in yaml.safe_load(config_text).get("scrape_configs") or ()}
        self.process.send_signal(signal.SIGHUP)
        try:
            async with asyncio.timeout(within):
                while True:
                    if set(await self.target_health()) == wanted:
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise OracleError(f"Prometheus did not apply the new configuration:\n{self.log_tail()}") from None

    async def stop_scraping(self) -> None:
        """Reload with no scrape jobs: the stored data is final, and queries have the CPU to themselves."""
        await self.reload(prometheus_config(()))

    async def stored_series(self, job: str, at: float) -> dict[LabelSet, str]:
        """The series `job` has at `at`, without job/instance and Prometheus' own per-scrape series.

        Fails unless the job's `up` is 1 in the same answer, so that the samples are those of a good
        scrape (a failed one would have written staleness markers instead).
        """
        result = await self.query(f'{{job="{job}"}}', at)
        series: dict[LabelSet, str] = {}
        up = None
        for element in result:
            metric: dict[str, str] = element["metric"]
            name = metric.get("__name__", "")
            if name in SYNTHETIC_NAMES:
                if name == "up":
                    up = element["value"][1]
                continue
            series[_without_target_labels(metric)] = element["value"][1]
        if up != "1":
            raise OracleError(f"job {job!r} has up={up} at {at:.3f}, not the result of a good scrape")
        return series

    async def stored_exemplars(self, job: str) -> dict[ExemplarKey, str]:
        """Every exemplar of `job`'s series (`--enable-feature=exemplar-storage`), whatever its time.

        Exemplar storage keeps one exemplar once however often it is scraped again (same labels, value and
        timestamp), so repeated scrapes do not multiply them.
        """
        data = await self.api("query_exemplars", query=f'{{job="{job}"}}')
        exemplars: dict[ExemplarKey, str] = {}
        for element in data or ():
            series = _without_target_labels(element["seriesLabels"])
            for exemplar in element["exemplars"]:
                key = (series, tuple(sorted(exemplar["labels"].items())), repr(exemplar["timestamp"]))
                exemplars[key] = exemplar["value"]
        return exemplars


def _without_target_labels(metric: Mapping[str, str]) -> LabelSet:
    """A series' labels, sorted, without the target labels Prometheus adds (job, instance)."""
    return tuple(sorted((key, value) for key, value in metric.items() if key not in TARGET_LABELS))


def _failed_for_good(health: tuple[str, str] | None) -> bool:
    """Whether a target's latest scrape failed in a way a retry does not cure (a timeout may be cured)."""
    return health is not None and health[0] == "down" and "deadline exceeded" not in health[1]


def _latest_before(samples: Sequence[tuple[float, str]], at: float) -> str | None:
    """The value of the latest sample at or before `at`, if any (samples come sorted by time)."""
    found = None
    for when, value in samples:
        if when > at:
            break
        found = value
    return found


@asynccontextmanager
async def running_prometheus(
    binary: str,
    config_text: str,
    directory: Path,
    ready_within: float = 30,
    features: Sequence[str] = (),
) -> AsyncIterator[Prometheus]:
    """Run Prometheus with `config_text` in `directory` on a free port until ready; SIGTERM it at the end.

    `features`: what `--enable-feature` enables, such as `exemplar-storage`.
    """
    config_path, log_path = _prepare(directory, config_text)
    for attempt in range(3):  # the port may be taken between free_port() and Prometheus binding it
        port = free_port()
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                *(f"--enable-feature={feature}" for feature in features),
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # If the test is torn down abruptly (pytest-timeout), the `finally` below may never run.
        kill_at_exit = functools.partial(_kill_quietly, process.pid)
        atexit.register(kill_at_exit)
        try:
            async with aiohttp.ClientSession() as session:
                prometheus = Prometheus(f"http://127.0.0.1:{port}", process, config_path, log_path, session)
                if await _wait_ready(prometheus, ready_within, last_attempt=attempt == 2):
                    yield prometheus
                    return
        finally:
            await _stop(process)
            atexit.unregister(kill_at_exit)
    raise AssertionError("unreachable")


def _kill_quietly(pid: int) -> None:
    """SIGKILL a Prometheus left running at interpreter exit."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _prepare(directory: Path, config_text: str) -> tuple[Path, Path]:
    """Write the configuration into `directory`; the paths of the configuration and of the log."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "prometheus.yml"
    _write(config_path, config_text)
    return config_path, directory / "prometheus.log"


def _write(path: Path, text: str) -> None:
    """Replace the file at `path` at once (Prometheus never reads half a configuration)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


async def _wait_ready(prometheus: Prometheus, within: float, *, last_attempt: bool) -> bool:
    """True once /-/ready answers 200; False if the port was taken (try again); OracleError otherwise."""
    try:
        async with asyncio.timeout(within):
            while True:
                if prometheus.process.returncode is not None:
                    tail = prometheus.log_tail()
                    if "address already in use" in tail and not last_attempt:
                        return False
                    raise OracleError(
                        f"Prometheus exited ({prometheus.process.returncode}) before ready:\n{tail}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with prometheus.session.get(
                        f"{prometheus.base_url}/-/ready", timeout=aiohttp.ClientTimeout(total=2)
                    ) as answer:
                        if answer.status == 200:
                            return True
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise OracleError(f"Prometheus not ready after {within:g}s:\n{prometheus.log_tail()}") from None


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM and wait; SIGKILL if it lingers. Always returns with the process reaped."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        process.kill()
        await process.wait()


def diff_series(expected: Mapping[LabelSet, str], actual: Mapping[LabelSet, str], limit: int = 20) -> str:
    """A readable account of how `actual` differs from `expected`; empty when they are identical."""
    return _diff(expected, actual, series_text, "series", limit)


def diff_exemplars(
    expected: Mapping[ExemplarKey, str], actual: Mapping[ExemplarKey, str], limit: int = 20
) -> str:
    """The same for stored exemplars (see `Prometheus.stored_exemplars`)."""
    return _diff(expected, actual, exemplar_text, "exemplars", limit)


def _diff(
    expected: Mapping[Key, str],
    actual: Mapping[Key, str],
    describe: Callable[[Key], str],
    what: str,
    limit: int,
) -> str:
    """How `actual` differs from `expected`: keys missing, unexpected, and with another value."""
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    changed = sorted(key for key in expected.keys() & actual.keys() if expected[key] != actual[key])
    if not (missing or extra or changed):
        return ""
    lines = [
        f"{len(expected)} {what} expected, {len(actual)} found: {len(missing)} missing, "
        f"{len(extra)} unexpected, {len(changed)} with another value"
    ]
    shown = [("missing   ", key, expected[key]) for key in missing]
    shown += [("unexpected", key, actual[key]) for key in extra]
    shown += [("value     ", key, f"{expected[key]} != {actual[key]}") for key in changed]
    lines += [f"  {kind} {describe(key)} {value}" for kind, key, value in shown[:limit]]
    if len(shown) > limit:
        lines.append(f"  ... and {len(shown) - limit} more")
    return "\n".join(lines)


def series_text(labels: LabelSet) -> str:
    """`name{a="b",...}` for a label set, for messages (values quoted and escaped as JSON strings)."""
    as_dict = dict(labels)
    name = as_dict.pop("__name__", "")
    inner = ",".join(
        f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in sorted(as_dict.items())
    )
    return f"{name}{{{inner}}}" if inner else name


def exemplar_text(key: ExemplarKey) -> str:
    """`series # {exemplar labels} @timestamp`, as OpenMetrics writes an exemplar (its value follows)."""
    series, labels, timestamp = key
    return f"{series_text(series)} # {series_text(labels)} @{timestamp}"


@dataclass(frozen=True)
class PromtoolVerdict:
    """What `promtool check metrics` said about a body: a parse error (or None) and its lint lines."""

    parse_error: str | None
    lint: frozenset[str]


async def promtool_check_metrics(binary: str, body: bytes, within: float = 60) -> PromtoolVerdict:
    """Run `promtool check metrics` on `body`; parse errors and lint problems told apart.

    promtool exits 3 for lint problems (one `<metric> <problem>` line each on stdout) and 1 for
    "error while linting: text format parsing error ..." on stderr.
    """
    process = await asyncio.create_subprocess_exec(
        binary,
        "check",
        "metrics",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate(body)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    lint = frozenset(line for line in stdout.splitlines() if line.strip())
    if process.returncode not in (0, 3) or "error while linting" in stdout + stderr:
        return PromtoolVerdict(f"exit {process.returncode}: {(stderr or stdout).strip()[:2000]}", lint)
    return PromtoolVerdict(None, lint)
