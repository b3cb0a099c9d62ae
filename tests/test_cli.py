"""The command line as users run it: flags, --config.check, logs, signals, and the demo, as real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from relay.__main__ import parse_listen_address
from tests.support import Pki, config_yaml

START_TIMEOUT_SECONDS = 20


def relay_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay", *args]


def run_relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(relay_command(*args), capture_output=True, text=True, timeout=30, check=False)


def http(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - the URL is the relay on 127.0.0.1
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - as above
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@contextmanager
def reaped(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The process, killed if still running at the end, and its pipes closed: nothing outlives a test."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def relay_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str, list[dict[str, str]]]]:
    """Start the relay with JSON logs on a free port; yield it, its base URL and its log lines so far."""
    process = subprocess.Popen(
        relay_command(
            "--web.listen-address=127.0.0.1:0", "--log.format=json", "--web.shutdown-delay=0", *args
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, str]] = []
    with reaped(process):
        assert process.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                pytest.fail(f"relay exited early with {process.wait()}: {lines}")
            lines.append(json.loads(line))
            if lines[-1]["msg"] == "serving":
                break
        yield process, lines[-1]["addresses"], lines


def read_log_until(
    process: subprocess.Popen[str], lines: list[dict[str, str]], message: str
) -> dict[str, str]:
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(json.loads(line))
        if lines[-1]["msg"] == message:
            return lines[-1]
    raise AssertionError(f"no log line {message!r} in {lines}")


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    pki = Pki(tmp_path)
    path = tmp_path / "relay.yml"
    path.write_text(config_yaml("https://127.0.0.1:1/metrics", pki.client_files()))
    return path


def test_config_check_ok(good_config):
    """A valid configuration with readable, matching files prints OK with a summary and exits 0."""
    result = run_relay(f"--config.file={good_config}", "--config.check")
    assert (result.returncode, result.stderr) == (0, "")
    first, upstream = result.stdout.splitlines()
    assert first == (
        f"OK: {good_config}: 1 upstream, 0 rules; the first client certificate to expire is test's, at "
        "3000-01-01T00:00:00Z"
    )
    assert upstream.startswith("  test: https://127.0.0.1:1/metrics, 0 rules, client certificate ")
    assert upstream.endswith(
        " valid 2000-01-01T00:00:00Z to 3000-01-01T00:00:00Z, CA valid to 3000-01-01T00:00:00Z"
    )


def test_config_check_warns_of_a_repeated_parameter(tmp_path):
    """A parameter in both url and params is a warning on stderr; the check still passes."""
    path = tmp_path / "relay.yml"
    path.write_text("upstreams:\n  - name: a\n    url: http://h/m?x=1\n    params: {x: ['2']}\n")
    result = run_relay(f"--config.file={path}", "--config.check")
    assert (result.returncode, result.stdout) == (
        0,
        f"OK: {path}: 1 upstream, 0 rules\n  a: http://h/m?x=1&x=2, 0 rules\n",
    )
    assert result.stderr == (
        f"warning: {path}:4: upstreams[0].params.x: x is in the url's query too, so the request carries it "
        "twice; keep one of them\n"
    )


def test_config_check_lists_every_problem(tmp_path):
    """A bad configuration exits 1 and prints each problem with file, line and location; nothing starts."""
    path = tmp_path / "relay.yml"
    path.write_text(
        "upstreams:\n  - name: a\n    url: https://h/m\n    timeout: soon\n"
        "    tls_config:\n      ca_file: nowhere/ca.crt\n      min_version: TLS9\n"
    )
    result = run_relay(f"--config.file={path}", "--config.check")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:4: upstreams[0].timeout: not a duration: 'soon' "
        "(use a number with a unit, e.g. 10s, 1m30s, 500ms)",
        f'{path}:6: upstreams[0].tls_config.ca_file: "nowhere/ca.crt" ({tmp_path}/nowhere/ca.crt): '
        "cannot read: No such file or directory",
        f"{path}:7: upstreams[0].tls_config.min_version: unknown TLS version 'TLS9' "
        "(use one of TLS10, TLS11, TLS12, TLS13)",
    ]


def test_config_check_opens_the_files_it_names(tmp_path):
    """--config.check also loads the certificate files and names the one that is wrong."""
    pki = Pki(tmp_path)
    files = pki.client_files()
    files.key_file.write_bytes(trustme.CA().issue_cert("x@test").private_key_pem.bytes())
    path = tmp_path / "relay.yml"
    path.write_text(config_yaml("https://127.0.0.1:1/metrics", files))
    result = run_relay(f"--config.file={path}", "--config.check")
    assert result.returncode == 1
    assert result.stderr == (
        f'{path}:7: upstreams[0].tls_config.key_file: "{files.key_file}": the key does not match '
        "tls_config.cert_file\n"
    )
    assert "PRIVATE KEY" not in result.stderr


def test_config_check_on_a_missing_file(tmp_path):
    """A configuration file that does not exist is named in the error."""
    result = run_relay(f"--config.file={tmp_path / 'nope.yml'}", "--config.check")
    assert result.returncode == 1
    assert "nope.yml: cannot read the configuration file" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--config.file is required (or use --demo)"),
        (
            ("--config.file=x", "--web.listen-address=localhost"),
            "--web.listen-address: 'localhost' is not HOST:PORT",
        ),
        (("--config.file=x", "--log.level=verbose"), "invalid choice: 'verbose'"),
        (("--config.file=x", "--log.format=text"), "invalid choice: 'text'"),
    ],
)
def test_bad_flags_exit_2_with_usage(args, message):
    """Wrong flags are refused by the argument parser with a message naming the flag."""
    result = run_relay(*args)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize(
    ("address", "parsed"),
    [(":9795", (None, 9795)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:80", ("::1", 80))],
)
def test_listen_addresses(address, parsed):
    """HOST:PORT, :PORT (all interfaces) and [IPv6]:PORT are understood."""
    assert parse_listen_address(address) == parsed


def test_invalid_config_at_start_exits_1_with_the_error(tmp_path):
    """Starting with a broken configuration logs the located problem and exits 1."""
    path = tmp_path / "relay.yml"
    path.write_text("upstreams:\n  - name: a\n")
    result = run_relay(f"--config.file={path}", "--web.listen-address=127.0.0.1:0")
    assert result.returncode == 1
    assert "upstreams[0].url: is required" in result.stderr
    assert re.search(r"level=error .*msg=\"cannot start: invalid configuration\"", result.stderr)


def test_sighup_reloads_and_sigterm_stops_cleanly(good_config):
    """SIGHUP applies an edited file; SIGTERM makes the process exit 0 after logging its shutdown."""
    with relay_process(f"--config.file={good_config}") as (process, base_url, lines):
        assert base_url.startswith("http://127.0.0.1:")
        assert http(f"{base_url}/metrics/added")[0] == 404
        good_config.write_text(good_config.read_text().replace("name: test", "name: added"))
        process.send_signal(signal.SIGHUP)
        read_log_until(process, lines, "configuration reloaded")
        assert http(f"{base_url}/metrics/added")[0] == 502  # configured now; the upstream is down
        process.send_signal(signal.SIGTERM)
        read_log_until(process, lines, "shutting down")
        assert process.wait(timeout=15) == 0
    assert all(line["level"] in ("info", "warn") for line in lines)


def test_logfmt_is_the_default_log_format(good_config):
    """Without --log.format the log lines are logfmt with ts, level and msg."""
    process = subprocess.Popen(
        relay_command(
            f"--config.file={good_config}", "--web.listen-address=127.0.0.1:0", "--web.shutdown-delay=0"
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    with reaped(process):
        assert process.stderr is not None
        line = process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    assert re.match(r"ts=\S+Z level=info logger=relay msg=serving addresses=http://127\.0\.0\.1:\d+ ", line)


def test_demo_serves_a_relayed_exposition():
    """--demo starts the mTLS stand-in and a relay whose printed URLs serve metrics and a page."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        relay_command("--demo", "--web.listen-address=127.0.0.1:0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    with reaped(process):
        assert process.stdout is not None
        printed = ""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while "Ctrl-C" not in printed and time.monotonic() < deadline:
            printed += process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/metrics ", printed)
        assert match, printed
        base_url = match[1]
        status, body = http(f"{base_url}/metrics")
        assert status == 200
        assert "# TYPE scheduler_pending_pods gauge" in body
        assert "apiserver_request_total{" in body
        assert http(f"{base_url}/relay/metrics")[1].count(
            'metrics_relay_scrapes_total{upstream="ack-control-plane"} 1.0'
        )
        assert "ack-control-plane" in http(f"{base_url}/")[1]
        aggregator = re.search(r"(https://127\.0\.0\.1:\d+/metrics)", printed)
        assert aggregator, printed
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0


def test_help_names_the_flags_and_the_subcommands():
    """--help lists the serving flags and points to both subcommands' own help."""
    result = run_relay("--help")
    assert result.returncode == 0
    for flag in (
        "--web.config.file",
        "--web.shutdown-delay",
        "--web.shutdown-grace-period",
        "--web.max-requests",
    ):
        assert flag in result.stdout
    assert "relabel-test --help" in result.stdout
    assert "kubeconfig-secret --help" in result.stdout
