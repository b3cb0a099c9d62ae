"""`metrics-relay relabel-test` as users run it: a real process, the body on stdin or in a file, exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import config_yaml, require_fixtures

RULES = """\
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'go_.*'
        action: drop
      - target_label: cluster
        replacement: one
"""
BODY = b'# TYPE http_requests_total counter\nhttp_requests_total{code="200"} 3\ngo_goroutines 12\n'


def relabel_test(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "relabel-test", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "relay.yml"
    path.write_text(
        config_yaml("https://127.0.0.1:1/metrics", extra=RULES, name="apiserver"), encoding="utf-8"
    )
    return path


def test_summary_from_stdin_as_json(config_file):
    """The body on stdin gives one JSON object with the totals and each rule's counts."""
    result = relabel_test(f"--config.file={config_file}", "--upstream=apiserver", "--format=json", stdin=BODY)
    assert (result.returncode, result.stderr) == (0, b"")
    summary = json.loads(result.stdout)
    assert (summary["upstream"], summary["samples_in"], summary["samples_out"]) == ("apiserver", 2, 1)
    assert [
        (rule["index"], rule["action"], rule["dropped"], rule["changed"]) for rule in summary["rules"]
    ] == [
        (0, "drop", 1, 0),
        (1, "replace", 0, 1),
    ]


def test_summary_from_a_file_as_text(config_file, tmp_path):
    """`--input=FILE` reads the file; the text form is a table with one row per rule."""
    body_file = tmp_path / "body.prom"
    body_file.write_bytes(BODY)
    result = relabel_test(f"--config.file={config_file}", "--upstream=apiserver", f"--input={body_file}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "upstream apiserver: 2 samples in, 1 out"
    assert [line.split() for line in lines[4:6]] == [
        ["0", "drop", "2", "1", "1", "0"],
        ["1", "replace", "1", "1", "0", "1"],
    ]


@pytest.mark.fixtures
@pytest.mark.timeout(240)  # a 50 MB body built and read through a subprocess: slow on a loaded machine
def test_a_big_body_is_read_in_bounded_memory(config_file):
    """A 50 MB body from the real kube-apiserver fixture goes through stdin with a bounded peak memory."""
    fixture = (require_fixtures() / "kube-apiserver-1.35-minikube.prom").read_bytes()
    samples = [line for line in fixture.splitlines() if line and not line.startswith(b"#")]
    copies = 50_000_000 // len(fixture) + 1
    # Each copy's series carry a `copy` label: distinct series, as a bigger cluster would send.
    body = b"".join(
        line.replace(b"{", b'{copy="%d",' % copy, 1)
        if b"{" in line
        else line.replace(b" ", b'{copy="%d"} ' % copy, 1)
        for copy in range(copies)
        for line in samples
        for line in [line + b"\n"]
    )
    # VmHWM is the peak of this process's own memory; ru_maxrss would also count the peak of the pytest
    # process it was spawned from (Linux carries that over exec), which a whole-suite run makes large.
    script = (
        "import re, runpy, sys; sys.argv = ['metrics-relay', 'relabel-test', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('relay', run_name='__main__')\n"
        "finally:\n    status = open('/proc/self/status').read()\n"
        "    print(re.search(r'VmHWM:\\s+(\\d+) kB', status)[1], file=sys.stderr)\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            f"--config.file={config_file}",
            "--upstream=apiserver",
            "--format=json",
        ],
        input=body,
        capture_output=True,
        timeout=120,
        check=False,
        # Measured without coverage's tracer, which make test starts in subprocesses and which costs memory.
        env={name: value for name, value in os.environ.items() if not name.startswith("COVERAGE_")},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["samples_in"] == copies * len(samples)
    peak_kib = int(result.stderr.split()[-1])
    assert peak_kib < 250 * 1024, f"peak RSS {peak_kib} KiB for a {len(body)}-byte body"


def test_series_trace_as_text_and_json(config_file):
    """`--series` traces one series (a pasted line with value and timestamp) instead of reading a body."""
    series = "--series=go_goroutines 12 1700000000000"
    text = relabel_test(f"--config.file={config_file}", "--upstream=apiserver", series)
    assert text.returncode == 0, text.stderr
    assert text.stdout.decode().splitlines()[-1] == "verdict  dropped by rule 0 (drop)"
    as_json = relabel_test(f"--config.file={config_file}", "--upstream=apiserver", series, "--format=json")
    trace = json.loads(as_json.stdout)
    assert (trace["dropped_by"], trace["series"]) == (0, {"__name__": "go_goroutines"})


@pytest.mark.parametrize(
    ("arguments", "stdin", "message"),
    [
        pytest.param(
            ["--upstream=nope"], BODY, "no upstream is called 'nope'; the file has: apiserver", id="unknown"
        ),
        pytest.param(
            ["--input=/nonexistent/body.prom"], b"", "cannot read the input: No such file", id="no file"
        ),
        pytest.param(["--input=/"], b"", "/: cannot read the input: Is a directory", id="directory"),
        pytest.param(
            [], b"a 1\nb{c=d} 2\n", "expected a quoted label value in 'b{c=d} 2'", id="invalid line"
        ),
        pytest.param(
            [], b"a 1\n\nb 1_000\n", "<stdin>: invalid exposition at line 3 (byte 5), family b", id="located"
        ),
        pytest.param(
            ["--input.format=openmetrics"], b"a 1\n", "the OpenMetrics body ended without # EOF", id="no EOF"
        ),
        pytest.param(["--series=a{b=c}"], b"", "--series: expected a quoted label value", id="bad series"),
    ],
)
def test_errors_are_located_and_exit_1(config_file, arguments, stdin, message):
    """Each problem exits 1 with one message on stderr saying what is wrong and where; nothing on stdout."""
    # A flag given twice takes the last value: the case's own flags come after the defaults.
    result = relabel_test(f"--config.file={config_file}", "--upstream=apiserver", *arguments, stdin=stdin)
    assert result.returncode == 1
    assert result.stdout == b""
    assert message in result.stderr.decode()


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        pytest.param(None, "cannot read the configuration file", id="missing file"),
        pytest.param("upstreams: [", "relay.yml:", id="invalid YAML"),
        pytest.param(
            config_yaml(
                "https://h/m", extra="    metric_relabel_configs:\n      - {regex: '(', action: drop}\n"
            ),
            "upstreams[0].metric_relabel_configs[0].regex",
            id="invalid rule",
        ),
    ],
)
def test_configuration_problems_exit_1(tmp_path, config_text, message):
    """An unusable configuration file is reported as --config.check reports it, with its location."""
    path = tmp_path / "relay.yml"
    if config_text is not None:
        path.write_text(config_text, encoding="utf-8")
    result = relabel_test(f"--config.file={path}", "--upstream=test", stdin=BODY)
    assert result.returncode == 1
    assert message in result.stderr.decode()
