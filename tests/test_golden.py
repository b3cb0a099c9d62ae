"""Golden outputs: the real fixtures relayed with and without rules, recorded so that any change is seen.

A failure prints the first lines that changed. After an intended change, regenerate with
`UPDATE_GOLDEN=1 make test`. The files are gzipped (the text would be 15 MB); the differential test proves the
same rule sets against Prometheus itself.
"""

from __future__ import annotations

import difflib
import gzip
import itertools
import os
from pathlib import Path

import pytest
import yaml

from relay.config import parse
from relay.pipeline import body_relabeler
from relay.rules import Rules
from tests.support import require_fixtures
from tests.test_differential import FIXTURE_FILES, RULE_SETS_BY_NAME, is_openmetrics

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_RULE_SETS = ("none", "kube-prometheus-apiserver", "replace-static", "labeldrop")
TEXT_FIXTURES = sorted(fixture for fixture in FIXTURE_FILES if not is_openmetrics(fixture))
OPENMETRICS_FIXTURES = sorted(fixture for fixture in FIXTURE_FILES if is_openmetrics(fixture))

pytestmark = [pytest.mark.fixtures, pytest.mark.usefixtures("engine")]


def relay_rules(rule_set: str) -> Rules:
    rules = [dict(rule) for rule in RULE_SETS_BY_NAME[rule_set].rules]
    text = yaml.safe_dump({"upstreams": [{"name": "g", "url": "http://h/", "metric_relabel_configs": rules}]})
    return Rules.for_upstream(parse(text, source="golden.yml", base_dir=Path()).upstreams[0])


def relayed(body: bytes, rules: Rules, *, openmetrics: bool) -> bytes:
    relabeler = body_relabeler(rules, openmetrics=openmetrics)
    chunks = [body[offset : offset + 65536] for offset in range(0, len(body), 65536)]
    return b"".join(relabeler.feed(chunk) for chunk in chunks) + relabeler.finish()


def check_golden(name: str, output: bytes) -> None:
    """Compare with tests/golden/<name>.gz, or write it when UPDATE_GOLDEN is set."""
    path = GOLDEN / f"{name}.gz"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_bytes(gzip.compress(output, compresslevel=9, mtime=0))
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    expected = gzip.decompress(path.read_bytes())
    if output != expected:
        changes = difflib.unified_diff(
            expected.decode().splitlines(), output.decode().splitlines(), "recorded", "now", lineterm="", n=0
        )
        shown = "\n".join(itertools.islice(changes, 40))
        pytest.fail(f"{name}: the output changed (UPDATE_GOLDEN=1 records it):\n{shown}")


@pytest.mark.parametrize("rule_set", GOLDEN_RULE_SETS)
@pytest.mark.parametrize("fixture", TEXT_FIXTURES)
def test_text_fixture_relays_as_recorded(fixture, rule_set):
    """Each text fixture, relayed with each rule set, is byte for byte the recorded output."""
    body = (require_fixtures() / FIXTURE_FILES[fixture]).read_bytes()
    check_golden(f"{fixture}--{rule_set}.prom", relayed(body, relay_rules(rule_set), openmetrics=False))


@pytest.mark.parametrize("fixture", OPENMETRICS_FIXTURES)
def test_openmetrics_fixture_relays_as_recorded(fixture):
    """Each OpenMetrics fixture, relayed in OpenMetrics without rules, is the recorded output."""
    body = (require_fixtures() / FIXTURE_FILES[fixture]).read_bytes()
    check_golden(f"{fixture}--none.om.txt", relayed(body, relay_rules("none"), openmetrics=True))
