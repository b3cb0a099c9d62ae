"""Where metadata goes in a relayed body: held for its family's first surviving sample, sent once or never."""

from __future__ import annotations

import pytest

from relay.metadata import MetadataTracker


def tracker(*, openmetrics: bool = False, utf8_names: bool = False) -> MetadataTracker:
    """A tracker for one new body."""
    return MetadataTracker(openmetrics=openmetrics, utf8_names=utf8_names)


# (comment line, kept exactly as it came, the line held for the family's first sample if any)
COMMENTS = [
    pytest.param(b"# TYPE up gauge", True, b"# TYPE up gauge", id="type"),
    pytest.param(b"# HELP up Whether it is up.", True, b"# HELP up Whether it is up.", id="help"),
    pytest.param(b"#  TYPE up gauge", False, b"# TYPE up gauge", id="rewritten-blanks"),
    pytest.param(b"# HELP up a\\z", False, b"# HELP up a\\\\z", id="rewritten-escape"),
    pytest.param(b"# just a comment", False, None, id="plain-comment"),
    pytest.param(b"#TYPE up gauge", False, None, id="no-blank-is-a-comment"),
    pytest.param(b'# TYPE "a.b" gauge', False, None, id="utf8-name-for-a-text-scraper"),
]


@pytest.mark.parametrize(("line", "verbatim", "held"), COMMENTS)
def test_comment_lines(line, verbatim, held):
    """HELP and TYPE are held in the form strict parsers take (saying whether that is the line as it came);
    other comments, and metadata a text-format scraper cannot read, are dropped."""
    metadata = tracker()
    assert metadata.comment(line) is verbatim
    assert metadata.has_pending is (held is not None)
    assert metadata.describe("up" if b"up" in line else "a.b") == ([held] if held else [])


def test_a_quoted_utf8_name_is_kept_for_a_utf8_scraper():
    """A scraper that takes UTF-8 names gets the family's quoted TYPE line."""
    metadata = tracker(utf8_names=True)
    assert metadata.comment(b'# TYPE "a.b" gauge')
    assert metadata.describe("a.b") == [b'# TYPE "a.b" gauge']


def test_metadata_goes_out_before_the_first_sample_of_its_family_only():
    """A family's metadata waits past samples of other names and goes out once, before its first sample
    (a counter's `_total` sample belongs to it)."""
    metadata = tracker()
    metadata.comment(b"# HELP x Requests.")
    metadata.comment(b"# TYPE x counter")
    assert metadata.describe("other") == []
    assert metadata.has_pending
    assert metadata.describe("x_total") == [b"# HELP x Requests.", b"# TYPE x counter"]
    assert metadata.describe("x_total") == []
    assert not metadata.has_pending


def test_a_family_whose_name_was_already_sent_loses_its_metadata():
    """A TYPE after samples of that name (a rule renamed series into it) is never sent: strict parsers
    refuse it."""
    metadata = tracker()
    assert metadata.describe("renamed") == []
    metadata.comment(b"# TYPE renamed gauge")
    assert metadata.describe("renamed") == []


def test_a_family_described_once_is_never_described_again():
    """The same TYPE again later in the body is not held a second time."""
    metadata = tracker()
    metadata.comment(b"# TYPE a gauge")
    assert metadata.describe("a") == [b"# TYPE a gauge"]
    assert metadata.comment(b"# TYPE a gauge") is False
    assert not metadata.has_pending


@pytest.mark.parametrize(
    ("lines", "sent"),
    [
        pytest.param(
            (b"# TYPE a gauge", b"# TYPE a counter"), [b"# TYPE a counter"], id="two-types-last-wins"
        ),
        pytest.param((b"# HELP a x", b"# HELP a x"), [b"# HELP a x"], id="repeated-help-once"),
        pytest.param(
            (b"# HELP a one", b"# TYPE a gauge", b"# HELP a two"),
            [b"# TYPE a gauge", b"# HELP a two"],
            id="second-help-replaces-first",
        ),
    ],
)
def test_a_family_gets_one_line_of_each_kind(lines, sent):
    """Two TYPE (or HELP) lines for one family give one, the last, as Prometheus keeps the last."""
    metadata = tracker()
    for line in lines:
        metadata.comment(line)
    assert metadata.describe("a") == sent


def test_metadata_of_a_family_without_samples_is_forgotten_at_the_next_family():
    """Metadata held for a family no sample of which survived goes when the next family's begins."""
    metadata = tracker()
    metadata.comment(b"# TYPE a gauge")
    metadata.comment(b"# TYPE b gauge")
    assert metadata.describe("b") == [b"# TYPE b gauge"]
    assert metadata.describe("a") == []


def test_openmetrics_metadata_goes_as_it_came_and_eof_ends_the_body():
    """OpenMetrics TYPE and UNIT lines are held as they are; `# EOF` is no metadata and marks the end."""
    metadata = tracker(openmetrics=True)
    assert metadata.comment(b"# TYPE c_seconds counter")
    assert metadata.comment(b"# UNIT c_seconds seconds")
    assert metadata.describe("c_seconds_total") == [b"# TYPE c_seconds counter", b"# UNIT c_seconds seconds"]
    assert not metadata.ended
    assert metadata.comment(b"# EOF") is False
    assert metadata.ended
