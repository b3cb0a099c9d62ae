"""The configuration check: defaults, and the table of every message a bad file can give."""

from __future__ import annotations

import ast
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.config import parse
from relay.errors import ConfigError
from relay.loading import check_file
from tests.support import Pki, certificate_with_a_broken_key, write_encrypted_key, write_other_key

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


def test_keys_remember_their_lines_and_written_paths():
    """Each key's line and each path as written are kept, for problems found after parsing."""
    (first, _) = parse(FULL, source="relay.yml", base_dir=Path("/etc/relay")).upstreams
    assert (first.lines[""], first.lines["metric_relabel_configs"]) == (2, 15)
    assert (first.tls_config.lines["ca_file"], first.tls_config.written["ca_file"]) == (8, "tls/ca.crt")
    assert first.written["bearer_token_file"] == "token"
    assert first.metric_relabel_configs[0].lines == {"source_labels": 16, "regex": 17, "action": 18, "": 16}
    assert first.metric_relabel_configs[1].line_of("action") == 19  # not given: the rule's own line


def test_moving_keys_changes_no_setting():
    """Two files that differ only in where keys stand give equal settings: a reload keeps memo and
    credentials."""
    moved = FULL.replace("    timeout: 1m30s\n", "").replace(
        "    sample_limit:", "    timeout: 1m30s\n    sample_limit:"
    )
    moved = "# a comment that moves every line\n" + moved
    (before, _) = parse_text(FULL).upstreams  # type: ignore[attr-defined] - parse_text is loosely typed
    (after, _) = parse_text(moved).upstreams  # type: ignore[attr-defined] - as above
    assert before.lines != after.lines
    assert before.settings() == after.settings()
    assert before.relabel_settings() == after.relabel_settings()
    assert before.credential_settings() == after.credential_settings()


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


# --- the configuration-error table -------------------------------------------------------------------

UPSTREAM = "upstreams:\n  - name: a\n    url: https://h/metrics\n"
RULE = UPSTREAM + "    metric_relabel_configs:\n      - "  # the rule's first key is on line 5


def rule(*lines: str) -> str:
    """A file whose one rule has these keys, one a line from line 5."""
    return RULE + "\n        ".join(lines) + "\n"


def tls(ca: str = "tls/ca.crt", cert: str = "tls/tls.crt", key: str = "tls/tls.key", extra: str = "") -> str:
    """A file whose upstream names these credential files (ca_file on line 5, cert 6, key 7, extra 8)."""
    return (
        UPSTREAM
        + f"    tls_config:\n      ca_file: {ca}\n      cert_file: {cert}\n      key_file: {key}\n{extra}"
    )


CLIENT_FILE_PROBLEM = (
    'relay.yml:{line}: upstreams[0].tls_config.{key}: "{written}" (<dir>/{written}): {message}'
)


def client_file_problem(key: str, written: str, message: str) -> str:
    line = {"ca_file": 5, "cert_file": 6, "key_file": 7}[key]
    return CLIENT_FILE_PROBLEM.format(line=line, key=key, written=written, message=message)


CAMEL = "the Prometheus Operator's camelCase name; this file uses Prometheus' snake_case names"
SECRET = (
    "the Prometheus Operator names a key of a Secret; here mount the Secret as a volume and name its file"
)
RULE_KEYS = "action, modulus, regex, replacement, separator, source_labels, target_label"
ACTIONS = (
    "replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase"
)
TEMPLATE_RULE = (
    "a label name (letters, digits and '_', not starting with a digit) in which $1, $name or ${name} may "
    "stand for parts"
)

BAD_FILES = [
    # --- the file and its YAML
    ("", "relay.yml: the file is empty; it needs `upstreams:` with at least one upstream"),
    ("upstreams: [\n", "relay.yml:2: invalid YAML: expected the node content, but found '<stream end>'"),
    (
        "upstreams:\n  - name: a\n    url:http://h/\n    timeout: 1s\n",
        "relay.yml:3: invalid YAML: could not find expected ':' (this line is neither `key: value` nor a "
        "list "
        "item: probably a missing ':' or a missing space after it)",
    ),
    (
        "upstreams:\n  - name: a\n    url: http://h/\n      timeout: 1s\n",
        "relay.yml:4: invalid YAML: mapping values are not allowed here (a ':' where no key can start: "
        "probably this line is indented deeper than the key before it, or a value holds ': ' and needs "
        "quotes)",
    ),
    (
        "upstreams:\n  - name: a\n   - name: b\n",
        "relay.yml:3: invalid YAML: expected <block end>, but found '<block sequence start>' (wrong "
        "indentation: this line does not line up with the keys or list items before it)",
    ),
    (
        "upstreams:\n\t- name: a\n",
        "relay.yml:2: invalid YAML: found character '\\t' that cannot start any token (a tab: YAML indents "
        "with spaces only)",
    ),
    (
        "upstreams:\n  - name: a\n    url: *base\n",
        "relay.yml:3: invalid YAML: found undefined alias 'base' (an alias (*name) needs an anchor (&name) "
        "defined before it)",
    ),
    (
        "upstreams:\n  - name: a\n    url: 'http://h/\n",
        "relay.yml:3: invalid YAML: found unexpected end of stream (a quote opened on this line is never "
        "closed)",
    ),
    ("- a\n", "relay.yml:1: must be a mapping, not a list"),
    ("upstreams: []\n", "relay.yml:1: upstreams: needs at least one upstream"),
    (
        "upstream: []\n",
        "relay.yml:1: upstream: unknown key; did you mean upstreams?\nrelay.yml:1: upstreams: is required",
    ),
    (
        "global:\n  scrape_interval: 30s\nscrape_configs:\n  - job_name: x\n",
        "relay.yml:1: global: this is a Prometheus configuration file; the relay's has only `upstreams:`. "
        "For "
        "each scrape job to relay, write an upstream: url = scheme://target + metrics_path, and copy params, "
        "tls_config and metric_relabel_configs as they are\nrelay.yml:1: upstreams: is required",
    ),
    ("{[a]: b, upstreams: [{name: a, url: 'http://h/'}]}\n", "relay.yml:1: keys must be strings"),
    # --- an upstream's keys
    ("upstreams:\n  - url: http://h/\n", "relay.yml:2: upstreams[0].name: is required"),
    ("upstreams:\n  - name: a\n", "relay.yml:2: upstreams[0].url: is required"),
    ("upstreams:\n  -\n", "relay.yml:2: upstreams[0]: is empty; needs name, url"),
    ("upstreams:\n  - name: ''\n    url: http://h/\n", "relay.yml:2: upstreams[0].name: must not be empty"),
    (
        "upstreams:\n  - name: [a]\n    url: http://h/\n",
        "relay.yml:2: upstreams[0].name: must be a string, not a list",
    ),
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
        "upstreams:\n  - name: a\n    url: https://h/metrics\n    failover_urls: [http://g/metrics]\n",
        "relay.yml:4: upstreams[0].failover_urls[0]: must use https:// as url does "
        "(the credentials are the same)",
    ),
    (
        "upstreams:\n  - name: a\n    url: https://h/metrics\n    failover_urls: [g:6443]\n",
        "relay.yml:4: upstreams[0].failover_urls[0]: must be an absolute http:// or https:// URL with a host",
    ),
    (
        "upstreams:\n  - name: a\n    url: https://user:pw@h/metrics\n",
        "relay.yml:3: upstreams[0].url: must not contain credentials; use bearer_token_file or tls_config",
    ),
    (
        "upstreams:\n  - name: a\n    url: https://h/metrics#top\n",
        "relay.yml:3: upstreams[0].url: must not contain a #fragment",
    ),
    (
        UPSTREAM + "    timeout: 10\n",
        "relay.yml:4: upstreams[0].timeout: not a duration: '10' "
        "(use a number with a unit, e.g. 10s, 1m30s, 500ms)",
    ),
    (UPSTREAM + "    timeout: 0s\n", "relay.yml:4: upstreams[0].timeout: must be greater than 0"),
    (UPSTREAM + "    timeout:\n", "relay.yml:4: upstreams[0].timeout: must be a string, not empty"),
    (
        UPSTREAM + "    params:\n      hosting: true\n",
        'relay.yml:5: upstreams[0].params.hosting: must be a list of strings, e.g. ["true"]',
    ),
    (UPSTREAM + "    params: [hosting]\n", "relay.yml:4: upstreams[0].params: must be a mapping, not a list"),
    (UPSTREAM + "    sample_limit: -1\n", "relay.yml:4: upstreams[0].sample_limit: must not be negative"),
    (
        UPSTREAM + "    label_limit: 1.5\n",
        "relay.yml:4: upstreams[0].label_limit: must be a whole number, not float '1.5'",
    ),
    (
        UPSTREAM + "    label_limit: {}\n",
        "relay.yml:4: upstreams[0].label_limit: must be a whole number, not a mapping",
    ),
    (
        UPSTREAM + "    body_size_limit: 64XB\n",
        "relay.yml:4: upstreams[0].body_size_limit: not a size: '64XB' "
        "(use bytes or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB)",
    ),
    (
        UPSTREAM + "    relabel_cache_size: 0\n",
        "relay.yml:4: upstreams[0].relabel_cache_size: must be at least 1",
    ),
    (
        UPSTREAM + "    on_invalid_line: skip\n",
        "relay.yml:4: upstreams[0].on_invalid_line: must be one of fail, drop, not 'skip'",
    ),
    (UPSTREAM + "    timeout: 5s\n    timeout: 6s\n", "relay.yml:5: upstreams[0].timeout: duplicate key"),
    (
        UPSTREAM + "    colour: red\n",
        "relay.yml:4: upstreams[0].colour: unknown key (known keys: bearer_token_file, body_size_limit, "
        "failover_urls, label_limit, label_name_length_limit, label_value_length_limit, line_length_limit, "
        "metric_relabel_configs, min_interval, name, on_invalid_line, params, relabel_cache_size, "
        "sample_limit, timeout, tls_config, url)",
    ),
    # --- names brought from elsewhere
    (
        UPSTREAM + "    relabel_configs: []\n",
        "relay.yml:4: upstreams[0].relabel_configs: unknown key; did you mean metric_relabel_configs? (in "
        "Prometheus relabel_configs rewrites targets before the scrape; the relay rewrites the scraped "
        "series, "
        "which is metric_relabel_configs)",
    ),
    (
        UPSTREAM + "    relabelings: []\n",
        "relay.yml:4: upstreams[0].relabelings: unknown key; did you mean metric_relabel_configs? "
        "(relabelings rewrite targets in the Prometheus Operator; the relay rewrites the scraped series, "
        "which is metric_relabel_configs)",
    ),
    (
        UPSTREAM + "    metricRelabelings: []\n",
        f"relay.yml:4: upstreams[0].metricRelabelings: unknown key; did you mean metric_relabel_configs? "
        f"({CAMEL})",
    ),
    (
        UPSTREAM + "    tlsConfig: {}\n",
        f"relay.yml:4: upstreams[0].tlsConfig: unknown key; did you mean tls_config? ({CAMEL})",
    ),
    (
        UPSTREAM + "    scrapeTimeout: 5s\n",
        f"relay.yml:4: upstreams[0].scrapeTimeout: unknown key; did you mean timeout? ({CAMEL})",
    ),
    (
        UPSTREAM + "    scrape_timeout: 5s\n",
        "relay.yml:4: upstreams[0].scrape_timeout: unknown key; did you mean timeout? (the relay's name for "
        "the time an upstream scrape may take)",
    ),
    (
        "upstreams:\n  - job_name: a\n    url: http://h/\n",
        "relay.yml:2: upstreams[0].job_name: unknown key; did you mean name? (an upstream's name)\n"
        "relay.yml:2: upstreams[0].name: is required",
    ),
    (
        UPSTREAM + "    metrics_path: /m\n    scheme: https\n",
        "relay.yml:4: upstreams[0].metrics_path: unknown key; did you mean url? (the relay takes one url: "
        "scheme://host:port/path)\nrelay.yml:5: upstreams[0].scheme: unknown key; did you mean url? (the "
        "relay takes one url: scheme://host:port/path)",
    ),
    (
        UPSTREAM + "    static_configs: [{targets: [h]}]\n",
        "relay.yml:4: upstreams[0].static_configs: unknown key; did you mean url? (an upstream scrapes one "
        "target: write its address into url)",
    ),
    (
        UPSTREAM + "    targets: [h]\n",
        "relay.yml:4: upstreams[0].targets: unknown key; did you mean url? (an upstream scrapes one target: "
        "write its address into url)",
    ),
    (
        UPSTREAM + "    bearerTokenFile: token\n",
        f"relay.yml:4: upstreams[0].bearerTokenFile: unknown key; did you mean bearer_token_file? ({CAMEL})",
    ),
    (
        UPSTREAM + "    tls_config:\n      insecureSkipVerify: true\n      serverName: k\n",
        f"relay.yml:5: upstreams[0].tls_config.insecureSkipVerify: unknown key; did you mean "
        f"insecure_skip_verify? ({CAMEL})\nrelay.yml:6: upstreams[0].tls_config.serverName: unknown key; "
        f"did you mean server_name? ({CAMEL})",
    ),
    (
        UPSTREAM
        + "    tls_config:\n      ca: {secret: {name: s, key: ca.crt}}\n      keySecret: {name: s}\n",
        f"relay.yml:5: upstreams[0].tls_config.ca: unknown key; did you mean ca_file? ({SECRET})\n"
        f"relay.yml:6: upstreams[0].tls_config.keySecret: unknown key; did you mean key_file? ({SECRET})",
    ),
    (
        UPSTREAM + "    tls_config:\n      cert: {secret: {name: s, key: tls.crt}}\n",
        f"relay.yml:5: upstreams[0].tls_config.cert: unknown key; did you mean cert_file? ({SECRET})",
    ),
    (
        UPSTREAM + "    bearerTokenSecret: {name: s, key: token}\n",
        f"relay.yml:4: upstreams[0].bearerTokenSecret: unknown key; did you mean bearer_token_file? "
        f"({SECRET})",
    ),
    (
        UPSTREAM + "    authorization: {credentials_file: token}\n",
        "relay.yml:4: upstreams[0].authorization: unknown key; did you mean bearer_token_file? (the relay "
        "sends `Authorization: Bearer` with the token read from bearer_token_file)",
    ),
    (
        rule("sourceLabels: [a]", "targetLabel: b"),
        f"relay.yml:5: upstreams[0].metric_relabel_configs[0].sourceLabels: unknown key; did you mean "
        f"source_labels? ({CAMEL})\nrelay.yml:6: upstreams[0].metric_relabel_configs[0].targetLabel: "
        f"unknown key; did you mean target_label? ({CAMEL})",
    ),
    (
        UPSTREAM + "    tls_config:\n      cafile: ca.crt\n",
        "relay.yml:5: upstreams[0].tls_config.cafile: unknown key; did you mean ca_file?",
    ),
    (
        rule("action: drop", "regexp: x"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].regexp: unknown key; did you mean regex?",
    ),
    (
        rule("action: drop", "colour: x"),
        f"relay.yml:6: upstreams[0].metric_relabel_configs[0].colour: unknown key (known keys: {RULE_KEYS})",
    ),
    # --- merge keys
    (
        UPSTREAM + "    tls_config:\n      <<: 1\n",
        "relay.yml:5: upstreams[0].tls_config.<<: a merge needs a mapping or a list of mappings (*anchors)",
    ),
    (
        UPSTREAM + "    tls_config: &tls\n      server_name: k\n      <<: *tls\n",
        "relay.yml:6: upstreams[0].tls_config.<<: a mapping cannot merge itself (its anchor is around the "
        "merge)",
    ),
    # --- tls_config
    (
        UPSTREAM + "    tls_config:\n      cert_file: tls/tls.crt\n",
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
    # --- metric_relabel_configs: structure
    (
        UPSTREAM + "    metric_relabel_configs:\n      source_labels: [a]\n",
        "relay.yml:5: upstreams[0].metric_relabel_configs: must be a list, not a mapping",
    ),
    (
        rule("source_labels: a"),
        "relay.yml:5: upstreams[0].metric_relabel_configs[0].source_labels: must be a list, not str 'a'",
    ),
    (
        rule("modulus: many"),
        "relay.yml:5: upstreams[0].metric_relabel_configs[0].modulus: must be a whole number, not str 'many'",
    ),
    # --- metric_relabel_configs: what Prometheus refuses when it compiles a rule
    (
        rule("action: ''"),
        f"relay.yml:5: upstreams[0].metric_relabel_configs[0].action: is empty; use one of {ACTIONS}",
    ),
    (
        rule("source_labels: [a]", "action: keeep"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].action: unknown relabel action 'keeep'; use "
        "one "
        f"of {ACTIONS}",
    ),
    (
        rule("action: drop", "source_labels: [a, '']"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].source_labels[1]: a label name must not be "
        "empty",
    ),
    (
        rule("action: drop", "source_labels: [a]", "regex: 'a(b'"),
        "relay.yml:7: upstreams[0].metric_relabel_configs[0].regex: 'a(b' is not a valid RE2 regular "
        "expression as Go reads it: missing ): a(b",
    ),
    (
        rule("action: drop", "regex: 'a\\Cb'"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].regex: 'a\\\\Cb' is not a valid RE2 regular "
        "expression as Go reads it: \\C (any single byte) is not supported by Go's regexp",
    ),
    (
        rule("action: drop", "regex: 'a{1001}'"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].regex: 'a{1001}' is not a valid RE2 regular "
        "expression as Go reads it: invalid repetition size: {1001}",
    ),
    (
        rule("action: drop", "regex: 'a{1000000000}'"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].regex: 'a{1000000000}' is not a valid RE2 "
        "regular expression as Go reads it: repeat count {1000000000} exceeds Go's limit of 1000",
    ),
    (
        rule("action: drop", "regex: '(a{1000}){1000}'"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].regex: '(a{1000}){1000}' is not a valid RE2 "
        "regular expression as Go reads it: invalid repetition size: {1000}",
    ),
    (
        rule("action: drop", "regex: '[a'"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].regex: '[a' is not a valid RE2 regular "
        "expression as Go reads it: missing ]: [a",
    ),
    (
        rule("action: drop", "regex: 'a\\'"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].regex: 'a\\\\' is not a valid RE2 regular "
        "expression as Go reads it: trailing backslash at end of expression",
    ),
    (
        rule("action: drop", "regex: '(?P<é>a)'"),
        "relay.yml:6: upstreams[0].metric_relabel_configs[0].regex: '(?P<é>a)' is not a valid RE2 regular "
        "expression as Go reads it: group name 'é' must be ASCII letters, digits and '_' in Go",
    ),
    (
        rule("action: hashmod", "target_label: shard", "modulus: 18446744073709551616"),
        "relay.yml:7: upstreams[0].metric_relabel_configs[0].modulus: must be below 2^64: Prometheus reads "
        "it "
        "as an unsigned 64-bit number",
    ),
    (
        rule("action: hashmod", "target_label: shard"),
        "relay.yml:5: upstreams[0].metric_relabel_configs[0].modulus: hashmod needs a modulus greater than 0",
    ),
    (
        rule("action: lowercase", "source_labels: [a]"),
        "relay.yml:5: upstreams[0].metric_relabel_configs[0].target_label: lowercase needs a target_label to "
        "write to",
    ),
    (
        rule("target_label: '${1'"),
        f"relay.yml:5: upstreams[0].metric_relabel_configs[0].target_label: '${{1' is not a valid target for "
        f"replace: {TEMPLATE_RULE}",
    ),
    (
        rule("target_label: 1abc"),
        "relay.yml:5: upstreams[0].metric_relabel_configs[0].target_label: '1abc' is not a valid label name "
        "(letters, digits and '_', not starting with a digit)",
    ),
    (
        rule("action: keepequal", "source_labels: [a]", "target_label: $1"),
        "relay.yml:7: upstreams[0].metric_relabel_configs[0].target_label: '$1' is not a valid label name "
        "for "
        "keepequal (letters, digits and '_', not starting with a digit; no $)",
    ),
    (
        rule("action: uppercase", "source_labels: [a]", "target_label: b", "replacement: c"),
        "relay.yml:8: upstreams[0].metric_relabel_configs[0].replacement: uppercase takes no replacement; "
        "remove it",
    ),
    (
        rule("action: labelmap", "replacement: 'a-b'"),
        f"relay.yml:6: upstreams[0].metric_relabel_configs[0].replacement: 'a-b' is not a valid labelmap "
        f"replacement: {TEMPLATE_RULE}",
    ),
    (
        rule("action: dropequal", "source_labels: [a]", "target_label: b", "separator: ','"),
        "relay.yml:8: upstreams[0].metric_relabel_configs[0].separator: dropequal uses only source_labels "
        "and "
        "target_label; remove separator",
    ),
    (
        rule("action: labeldrop", "regex: tmp_.*", "target_label: b"),
        "relay.yml:7: upstreams[0].metric_relabel_configs[0].target_label: labeldrop uses only regex "
        "(matched "
        "against label names); remove target_label",
    ),
    # --- the files the configuration names
    (
        tls(ca="missing/ca.crt"),
        client_file_problem("ca_file", "missing/ca.crt", "cannot read: No such file or directory"),
    ),
    (
        tls(ca="garbage.pem"),
        client_file_problem(
            "ca_file",
            "garbage.pem",
            "no PEM CA certificate could be loaded from it",
        ),
    ),
    (tls(cert="garbage.pem"), client_file_problem("cert_file", "garbage.pem", "not a PEM certificate")),
    (tls(key="garbage.pem"), client_file_problem("key_file", "garbage.pem", "not a PEM private key")),
    (
        tls(cert="broken-key.crt"),
        client_file_problem("cert_file", "broken-key.crt", "the certificate's public key cannot be read"),
    ),
    (
        tls(key="encrypted.key"),
        client_file_problem(
            "key_file",
            "encrypted.key",
            "the key is encrypted; the relay never prompts for a passphrase: store the key unencrypted in "
            "the "
            "Secret",
        ),
    ),
    (
        tls(key="other.key"),
        client_file_problem("key_file", "other.key", "the key does not match tls_config.cert_file"),
    ),
    (
        tls(cert="expired/tls.crt", key="expired/tls.key"),
        client_file_problem(
            "cert_file", "expired/tls.crt", "the client certificate expired at 2021-01-01T00:00:00Z"
        ),
    ),
    (
        tls(cert="future/tls.crt", key="future/tls.key"),
        client_file_problem(
            "cert_file", "future/tls.crt", "the client certificate is not valid before 2100-01-01T00:00:00Z"
        ),
    ),
    (
        UPSTREAM + "    bearer_token_file: empty.token\n",
        'relay.yml:4: upstreams[0].bearer_token_file: "empty.token" (<dir>/empty.token): the file is empty',
    ),
    (
        UPSTREAM + "    bearer_token_file: control.token\n",
        'relay.yml:4: upstreams[0].bearer_token_file: "control.token" (<dir>/control.token): the token holds '
        "a line break or control character",
    ),
    (
        UPSTREAM + "    bearer_token_file: <dir>/missing.token\n",
        'relay.yml:4: upstreams[0].bearer_token_file: "<dir>/missing.token": cannot read: No such file or '
        "directory",
    ),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configuration folder: good client files under tls/, expired and future ones, broken files."""
    root = tmp_path_factory.mktemp("config")
    pki = Pki(root)
    pki.client_files("tls")
    issue = pki.client_ca.issue_cert
    expired = issue(
        "expired@test",
        not_before=datetime(2020, 1, 1, tzinfo=UTC),
        not_after=datetime(2021, 1, 1, tzinfo=UTC),
    )
    future = issue(
        "future@test", not_before=datetime(2100, 1, 1, tzinfo=UTC), not_after=datetime(2101, 1, 1, tzinfo=UTC)
    )
    pki.client_files("expired", expired)
    pki.client_files("future", future)
    (root / "garbage.pem").write_text("not a certificate\n")
    (root / "broken-key.crt").write_bytes(certificate_with_a_broken_key(pki.client_cert))
    write_encrypted_key(root / "encrypted.key")
    write_other_key(root / "other.key")
    (root / "empty.token").write_text("\n")
    (root / "control.token").write_text("abc\x01def\n")
    return root


def check_text(folder: Path, text: str) -> str:
    """What `--config.check` reports for `text` in `folder`: each problem rendered, `<dir>` for the folder."""
    path = folder / "relay.yml"
    path.write_text(text.replace("<dir>", str(folder)), encoding="utf-8")
    try:
        check_file(path)
    except ConfigError as exc:
        return "\n".join(problem.render("relay.yml") for problem in exc.problems).replace(
            str(folder), "<dir>"
        )
    return "OK"


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[message for _, message in BAD_FILES])
def test_bad_file_gives_its_located_message(folder, text, message):
    """Each bad configuration is refused with exactly this message."""
    assert check_text(folder, text) == message


def test_every_problem_of_a_file_in_one_run(folder):
    """A bad duration, a bad regex and a missing certificate in one file: three problems in line order."""
    text = tls(cert="missing.crt", extra="    timeout: soon\n") + (
        "    metric_relabel_configs:\n      - action: drop\n        regex: '(('\n"
    )
    assert check_text(folder, text).splitlines() == [
        client_file_problem("cert_file", "missing.crt", "cannot read: No such file or directory"),
        "relay.yml:8: upstreams[0].timeout: not a duration: 'soon' "
        "(use a number with a unit, e.g. 10s, 1m30s, 500ms)",
        "relay.yml:11: upstreams[0].metric_relabel_configs[0].regex: '((' is not a valid RE2 regular "
        "expression as Go reads it: missing ): ((",
    ]


def test_a_rule_with_a_structural_problem_is_not_compiled_too(folder):
    """A rule whose keys are already wrong gives only those problems, not the ones that follow from them."""
    assert check_text(folder, rule("action: hashmod", "target_label: s", "modulus: [1]")) == (
        "relay.yml:7: upstreams[0].metric_relabel_configs[0].modulus: must be a whole number, not a list"
    )


def test_an_unreadable_configuration_file_is_named(tmp_path):
    """A configuration file that cannot be read, or is not UTF-8, is one problem naming the file."""
    with pytest.raises(ConfigError) as raised:
        check_file(tmp_path / "nope.yml")
    assert str(raised.value) == (
        f"{tmp_path}/nope.yml: cannot read the configuration file: [Errno 2] No such file or directory: "
        f"'{tmp_path}/nope.yml'"
    )
    (tmp_path / "latin1.yml").write_bytes(b"upstreams: \xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.yml: cannot read the configuration file: 'utf-8' codec"):
        check_file(tmp_path / "latin1.yml")


MERGED = """\
upstreams:
  - &first
    name: a
    url: https://h/metrics
    tls_config: &tls
      ca_file: tls/ca.crt
      cert_file: tls/tls.crt
      key_file: tls/tls.key
  - &second
    name: b
    url: https://g/metrics
    tls_config:
      <<: *tls
      server_name: kubernetes
      ca_file: other/ca.crt
  - <<: [*first, *second]
    name: c
"""


def test_merge_keys_as_prometheus_reads_them():
    """`<<: *anchor` merges a mapping (explicit keys win, merged keys keep their own lines) and a list of
    mappings merges each (the first that has a key wins)."""
    a, b, c = parse(MERGED, source="relay.yml", base_dir=Path("/etc/relay")).upstreams
    assert b.tls_config.server_name == "kubernetes"
    assert b.tls_config.ca_file == Path("/etc/relay/other/ca.crt")
    assert b.tls_config.cert_file == a.tls_config.cert_file
    assert b.tls_config.lines["cert_file"] == 7  # where the merged key is written
    assert (c.name, c.url, c.tls_config) == ("c", a.url, a.tls_config)


def test_a_problem_in_a_merged_mapping_is_on_its_own_line(folder):
    """A bad key brought in by a merge is reported where it is written."""
    text = UPSTREAM + "    tls_config: &tls\n      min_version: TLS9\n  - name: b\n    url: http://g/\n"
    text += "    params:\n      <<: *tls\n"
    message = check_text(folder, text)
    assert message == (
        "relay.yml:5: upstreams[0].tls_config.min_version: unknown TLS version 'TLS9' (use one of TLS10, "
        "TLS11, "
        "TLS12, TLS13)\nrelay.yml:5: upstreams[1].params.min_version: must be a list of strings, e.g. "
        '["true"]'
    )


def test_repeated_query_parameter_is_a_warning_not_a_problem(folder):
    """A parameter both in url and params passes the check with a warning naming it and its line."""
    path = folder / "relay.yml"
    path.write_text(
        "upstreams:\n  - name: a\n    url: https://h/m?hosting=true&x=1\n    params:\n      hosting: "
        "['true']\n"
    )
    checked = check_file(path)
    assert [warning.render("relay.yml") for warning in checked.config.warnings] == [
        "relay.yml:5: upstreams[0].params.hosting: hosting is in the url's query too, so the request carries "
        "it twice; keep one of them"
    ]
    assert checked.config.upstreams[0].query_url() == "https://h/m?hosting=true&x=1&hosting=true"


def test_summary_names_upstreams_rules_and_certificates(folder):
    """The OK summary: each upstream's URL with its query, its rule count, its certificate's subject and
    validity and its CA's expiry."""
    path = folder / "relay.yml"
    path.write_text(
        tls(
            extra="    params:\n      hosting: ['true']\n    metric_relabel_configs:\n      - action: drop\n"
            "        source_labels: [a]\n"
        )
        + "  - name: plain\n    url: http://h/m\n"
    )
    checked = check_file(path)
    first, second, third = checked.summary()
    assert first == (
        f"{path}: 2 upstreams, 1 rule; the first client certificate to expire is a's, at 3000-01-01T00:00:00Z"
    )
    certificate = checked.credentials["a"].certificate  # type: ignore[union-attr] - loaded above
    assert certificate is not None
    assert second.startswith(
        f"  a: https://h/metrics?hosting=true, 1 rule, client certificate {certificate.subject} valid "
        f"{certificate.not_before:%Y-%m-%dT%H:%M:%SZ} to {certificate.not_after:%Y-%m-%dT%H:%M:%SZ}, "
        "CA valid to "
    )
    assert third == "  plain: http://h/m, 0 rules"


def test_validity_is_no_problem_when_not_strict(folder):
    """Start-up takes an expired certificate (the relay serves and says what is wrong); reload does not."""
    path = folder / "relay.yml"
    path.write_text(tls(cert="expired/tls.crt", key="expired/tls.key"))
    assert check_file(path, strict_credentials=False).credentials["a"] is not None
    with pytest.raises(ConfigError, match="expired at 2021-01-01"):
        check_file(path)


# --- every message is in the table -------------------------------------------------------------------

SOURCES = ("config.py", "yamlnodes.py", "loading.py", "relabel.py", "goregexp.py", "tls.py", "units.py")
MESSAGE_CALLS = {"problem", "Problem", "ClientTLSMaterialError", "CredentialProblem", "ValueError"}
MESSAGE_LISTS = {"refusals", "problems", "warnings"}  # lists whose `append` takes a message
MESSAGE_FUNCTIONS = {"unknown_key_message", "problem_at"}  # what they return is a message
MESSAGE_CONSTANTS = {
    "_PROMETHEUS_FILE_HINT",
    "_MOUNT_HINT",
    "_CAMEL_HINT",
    "_FOREIGN_KEYS",
    "_YAML_EXPLANATIONS",
    "refusals",
}
# Texts the table cannot reach with real files, each with why.
UNREACHABLE = {
    "cannot be loaded with its key": "OpenSSL takes any pair the checks before it accepted",
    "the files changed while they were loaded": "a race between two reads of the same files",
    "unusable files": "a guard for errors the checks before it missed",
    "it is not valid UTF-8": "YAML text is always valid UTF-8",
}


def message_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The parts of a module that hold message texts: the arguments of the calls that make a problem, what
    message functions return, and the message constants."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            receiver = getattr(function.value, "id", "") if isinstance(function, ast.Attribute) else ""
            if called in MESSAGE_CALLS or (called == "append" and receiver in MESSAGE_LISTS):
                yield from node.args
        elif isinstance(node, ast.FunctionDef) and node.name in MESSAGE_FUNCTIONS:
            yield from (
                child.value for child in ast.walk(node) if isinstance(child, ast.Return) and child.value
            )
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(target, "id", "") in MESSAGE_CONSTANTS for target in targets):
                yield node.value


def message_fragments() -> set[str]:
    """The literal parts (of a few words at least) of every message text the owned modules can produce."""
    fragments: set[str] = set()
    for name in SOURCES:
        tree = ast.parse((Path(__file__).parents[1] / "relay" / name).read_text(encoding="utf-8"))
        for holder in message_nodes(tree):
            fragments.update(
                part.value.strip(" :;,.()'\"")
                for part in ast.walk(holder)
                if isinstance(part, ast.Constant) and isinstance(part.value, str)
            )
    return {fragment for fragment in fragments if len(fragment) > 3 and " " in fragment}


def test_every_message_the_code_can_give_is_in_the_table():
    """Each message text in config, loading, relabel, goregexp, tls and units appears in a table row (or in
    the tests above that need more than one file)."""
    table = "\n".join(message for _, message in BAD_FILES)
    elsewhere = [
        "cannot read the configuration file",  # test_an_unreadable_configuration_file_is_named
        "is in the url's query too, so the request carries it twice; keep one of them",  # the warning test
    ]
    fragments = message_fragments()
    assert UNREACHABLE.keys() <= fragments  # no excuse outlives its message
    missing = [text for text in sorted(fragments - UNREACHABLE.keys()) if text not in table]
    assert sorted(missing) == sorted(elsewhere)
