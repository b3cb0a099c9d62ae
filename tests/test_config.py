"""Configuration parsing: defaults, units, and a table of bad files with the exact message each must give."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from relay.config import parse
from relay.errors import ConfigError
from relay.units import format_duration, parse_duration, parse_size

FULL = """\
upstreams:
  - name: ack-control-plane
    url: https://10.0.0.10:6443/metrics
    params:
      hosting: ["true"]
    timeout: 1m30s
    tls_config:
      ca_file: tls/ca.crt
      cert_file: /abs/tls.crt
      key_file: tls/tls.key
      server_name: kubernetes
      insecure_skip_verify: false
      min_version: TLS12
    bearer_token_file: token
    metric_relabel_configs:
      - source_labels: [__name__, le]
        regex: apiserver_request_duration_seconds_bucket;(0.15|0.25)
        action: drop
      - target_label: cluster
        replacement: ack-one
    sample_limit: 100000
    label_limit: 30
    label_name_length_limit: 200
    label_value_length_limit: 1000
    body_size_limit: 64MB
  - name: second
    url: http://127.0.0.1:9100/metrics
"""


def parse_text(text: str) -> object:
    return parse(text, source="relay.yml", base_dir=Path("/etc/relay"))


def test_full_configuration_is_read_with_paths_resolved():
    """Every key of the schema is read; relative paths resolve against the configuration's folder."""
    config = parse(FULL, source="relay.yml", base_dir=Path("/etc/relay"))
    first, second = config.upstreams
    assert first.name == "ack-control-plane"
    assert first.params == (("hosting", "true"),)
    assert first.timeout == 90
    assert first.tls_config.ca_file == Path("/etc/relay/tls/ca.crt")
    assert first.tls_config.cert_file == Path("/abs/tls.crt")
    assert first.tls_config.server_name == "kubernetes"
    assert first.tls_config.min_version is ssl.TLSVersion.TLSv1_2
    assert first.bearer_token_file == Path("/etc/relay/token")
    assert first.body_size_limit == 64 * 1024 * 1024
    assert (first.sample_limit, first.label_limit) == (100000, 30)
    assert (first.label_name_length_limit, first.label_value_length_limit) == (200, 1000)
    drop, add = first.metric_relabel_configs
    assert drop.source_labels == ("__name__", "le")
    assert drop.action == "drop"
    assert drop.location == "upstreams[0].metric_relabel_configs[0]"
    assert (add.separator, add.regex, add.replacement, add.target_label) == (
        ";",
        "(.*)",
        "ack-one",
        "cluster",
    )
    assert second.name == "second"


def test_defaults_follow_prometheus():
    """An upstream with only name and url gets a 10 s timeout, no limits and no TLS settings."""
    (upstream,) = parse_text("upstreams:\n  - name: a\n    url: https://h/metrics\n").upstreams
    assert upstream.timeout == 10
    assert upstream.params == ()
    assert upstream.metric_relabel_configs == ()
    assert upstream.tls_config.insecure_skip_verify is False
    assert upstream.tls_config.ca_file is None
    assert upstream.body_size_limit == upstream.sample_limit == 0


def test_relabel_defaults_are_prometheus_defaults():
    """A rule with no keys set is Prometheus' default replace rule."""
    text = "upstreams:\n  - name: a\n    url: http://h/\n    metric_relabel_configs:\n      - {}\n"
    (rule,) = parse_text(text).upstreams[0].metric_relabel_configs
    assert (rule.action, rule.regex, rule.separator, rule.replacement, rule.modulus) == (
        "replace",
        "(.*)",
        ";",
        "$1",
        0,
    )


UPSTREAM = "upstreams:\n  - name: a\n    url: https://h/metrics\n"

BAD_FILES = [
    ("", "relay.yml: the file is empty; it needs `upstreams:` with at least one upstream"),
    ("upstreams: [\n", "relay.yml:2: invalid YAML: expected the node content, but found '<stream end>'"),
    ("- a\n", "relay.yml:1: must be a mapping, not a list"),
    ("upstreams: []\n", "relay.yml:1: upstreams: needs at least one upstream"),
    (
        "upstream: []\n",
        "relay.yml:1: upstream: unknown key (known keys: upstreams)\nrelay.yml:1: upstreams: is required",
    ),
    ("upstreams:\n  - url: http://h/\n", "relay.yml:2: upstreams[0].name: is required"),
    ("upstreams:\n  - name: a\n", "relay.yml:2: upstreams[0].url: is required"),
    (
        "upstreams:\n  - name: a b\n    url: http://h/\n",
        "relay.yml:2: upstreams[0].name: 'a b' is not a valid name: use letters, digits, '_' and '-'",
    ),
    (
        "upstreams:\n  - {name: a, url: http://h/}\n  - {name: a, url: http://g/}\n",
        "relay.yml:3: upstreams[1].name: duplicate upstream name 'a'",
    ),
    (
        "upstreams:\n  - name: a\n    url: h:6443/metrics\n",
        "relay.yml:3: upstreams[0].url: must be an absolute http:// or https:// URL with a host",
    ),
    (
        "upstreams:\n  - name: a\n    url: https://user:pw@h/metrics\n",
        "relay.yml:3: upstreams[0].url: must not contain credentials; use bearer_token_file or tls_config",
    ),
    (
        UPSTREAM + "    timeout: 10\n",
        "relay.yml:4: upstreams[0].timeout: not a duration: '10' "
        "(use a number with a unit, e.g. 10s, 1m30s, 500ms)",
    ),
    (UPSTREAM + "    timeout: 0s\n", "relay.yml:4: upstreams[0].timeout: must be greater than 0"),
    (
        UPSTREAM + "    params:\n      hosting: true\n",
        'relay.yml:5: upstreams[0].params.hosting: must be a list of strings, e.g. ["true"]',
    ),
    (
        UPSTREAM + "    tls_config:\n      cert_file: c.crt\n",
        "relay.yml:5: upstreams[0].tls_config: cert_file and key_file must be given together",
    ),
    (
        UPSTREAM + "    tls_config:\n      min_version: TLS14\n",
        "relay.yml:5: upstreams[0].tls_config.min_version: unknown TLS version 'TLS14' "
        "(use one of TLS10, TLS11, TLS12, TLS13)",
    ),
    (
        UPSTREAM + "    tls_config:\n      insecure_skip_verify: sure\n",
        "relay.yml:5: upstreams[0].tls_config.insecure_skip_verify: must be true or false, not str 'sure'",
    ),
    (
        UPSTREAM + "    tls_config:\n      cafile: ca.crt\n",
        "relay.yml:5: upstreams[0].tls_config.cafile: unknown key (known keys: ca_file, cert_file, "
        "insecure_skip_verify, key_file, min_version, server_name)",
    ),
    (UPSTREAM + "    sample_limit: -1\n", "relay.yml:4: upstreams[0].sample_limit: must not be negative"),
    (
        UPSTREAM + "    label_limit: 1.5\n",
        "relay.yml:4: upstreams[0].label_limit: must be a whole number, not float '1.5'",
    ),
    (
        UPSTREAM + "    body_size_limit: 64XB\n",
        "relay.yml:4: upstreams[0].body_size_limit: not a size: '64XB' "
        "(use bytes or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB)",
    ),
    (
        UPSTREAM + "    metric_relabel_configs:\n      - action: drop\n        regexp: x\n",
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].regexp: unknown key (known keys: action, "
        "modulus, regex, replacement, separator, source_labels, target_label)",
    ),
    (
        UPSTREAM + "    metric_relabel_configs:\n      source_labels: [a]\n",
        "relay.yml:5: upstreams[0].metric_relabel_configs: must be a list, not a mapping",
    ),
    (UPSTREAM + "    timeout: 5s\n    timeout: 6s\n", "relay.yml:5: upstreams[0].timeout: duplicate key"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[message for _, message in BAD_FILES])
def test_bad_file_gives_its_located_message(text, message):
    """Each bad configuration is refused with exactly this message."""
    with pytest.raises(ConfigError) as raised:
        parse_text(text)
    assert str(raised.value) == message


def test_every_problem_is_reported_at_once_in_line_order():
    """Several problems in one file are all listed, ordered by line."""
    text = "upstreams:\n  - name: a\n    url: ftp://h\n    timeout: soon\n    colour: red\n"
    with pytest.raises(ConfigError) as raised:
        parse_text(text)
    assert [problem.line for problem in raised.value.problems] == [3, 4, 5]
    assert [problem.path for problem in raised.value.problems] == [
        "upstreams[0].url",
        "upstreams[0].timeout",
        "upstreams[0].colour",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("10s", 10), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("2d", 172800), ("1w", 604800)],
)
def test_durations(text, seconds):
    """Prometheus durations are read in seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "s", "1s1m", "1.5s", "-1s", "10 s"])
def test_bad_durations(text):
    """Anything Prometheus' ParseDuration refuses is refused."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_duration_formatting_round_trips():
    """Durations print the way Prometheus writes them."""
    for text in ("1m30s", "500ms", "1h", "10s", "1d2h3m4s5ms"):
        assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("1024", 1024), ("1KB", 1024), ("64MB", 64 << 20), ("1GiB", 1 << 30), ("2 mib", 2 << 20)],
)
def test_sizes(text, size):
    """Sizes are bytes, with base-2 units as Prometheus reads them."""
    assert parse_size(text) == size
