"""One upstream's compiled rules and memo: what a series text becomes, the memo's bounds, limits, tails."""

from __future__ import annotations

from pathlib import Path

import pytest

import relay.rules
from relay.config import parse
from relay.errors import InvalidExpositionError
from relay.rules import INVALID_LINE, Limits, Rules

DROP_UP = "    metric_relabel_configs:\n      - {source_labels: [__name__], regex: up, action: drop}\n"


def rename_up(to: str) -> str:
    """A rule that renames series `up` to `to` (an empty `to` removes the name)."""
    return (
        "    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: up\n"
        f"        target_label: __name__\n        replacement: {to}\n"
    )


def rules(extra: str = "") -> Rules:
    """Fresh rules (an empty memo) for a one-upstream configuration with `extra` settings."""
    text = f"upstreams:\n  - name: t\n    url: https://h/m\n{extra}"
    return Rules.for_upstream(parse(text, source="r.yml", base_dir=Path("/")).upstreams[0])


# (settings, series text, output, name, renamed, unchanged, drop reason)
SERIES = [
    pytest.param("", b'up{job="a"}', b'up{job="a"}', "up", False, True, "", id="as-it-came"),
    pytest.param("", b"up", b"up", "up", False, True, "", id="bare-name"),
    pytest.param("", b'up{job=""}', b'up{job=""}', "up", False, True, "", id="empty-value-kept-as-it-came"),
    pytest.param("", b'up{job="a",}', b'up{job="a"}', "up", False, False, "", id="stray-comma-canonical"),
    pytest.param("", b'up{ job = "a" }', b'up{job="a"}', "up", False, False, "", id="blanks-canonical"),
    pytest.param("", b'{"up"}', b"up", "up", False, False, "", id="quoted-legacy-name"),
    pytest.param("", b'{"a.b",job="a"}', None, "a.b", False, False, "utf8_name", id="utf8-name"),
    pytest.param(DROP_UP, b'up{job="a"}', None, "up", False, False, "relabel", id="dropped-by-a-rule"),
    pytest.param(
        rename_up("renamed"), b'up{job="a"}', b'renamed{job="a"}', "renamed", True, False, "", id="renamed"
    ),
    pytest.param(
        rename_up("renamed"),
        b'up{job="",x="1"}',
        b'renamed{x="1"}',
        "renamed",
        True,
        False,
        "",
        id="rewritten-loses-empty-values",
    ),
    pytest.param(rename_up("a.b"), b"up", None, "a.b", True, False, "invalid_name", id="renamed-to-utf8"),
    pytest.param(rename_up('""'), b'up{a="1"}', None, "up", True, False, "invalid_name", id="name-removed"),
    pytest.param(rename_up('""'), b"up", None, "up", False, False, "relabel", id="every-label-removed"),
]


@pytest.mark.parametrize(("settings", "series", "output", "name", "renamed", "unchanged", "reason"), SERIES)
def test_what_a_series_becomes(settings, series, output, name, renamed, unchanged, reason):  # noqa: PLR0917 - a table row
    """Each series text becomes its output (as it came when nothing changed it, else canonical) or a drop
    with its reason, with its name and whether a rule renamed it."""
    result = rules(settings).relabel_series(series)
    assert (result.output, result.name, result.renamed, result.unchanged, result.drop_reason) == (
        output,
        name,
        renamed,
        unchanged,
        reason,
    )


def test_a_utf8_name_keeps_its_quoted_form_for_scrapers_that_take_it():
    """A series whose name the text format 0.0.4 cannot carry keeps its quoted form for UTF-8 scrapers."""
    assert rules().relabel_series(b'{"a.b",job="a"}').utf8_output == b'{"a.b",job="a"}'


@pytest.mark.parametrize(
    ("series", "valid"), [(b'up{job="a"}', True), (b'up{job="a",}', False), (b'up{ job="a"}', False)]
)
def test_the_result_says_whether_openmetrics_may_carry_the_text(series, valid):
    """One memo serves both formats: a text that OpenMetrics' stricter form refuses is marked as such."""
    assert rules().relabel_series(series).openmetrics_valid is valid


@pytest.mark.parametrize("settings", ["", "    on_invalid_line: fail\n"])
def test_an_invalid_series_fails_by_default(settings):
    """An invalid series text raises the parse error unless invalid lines are to be dropped."""
    with pytest.raises(InvalidExpositionError, match="expected a metric name"):
        rules(settings).relabel_series(b"1up")
    with pytest.raises(InvalidExpositionError, match="OpenMetrics"):
        rules(settings).openmetrics_refusal(b'up{job="a",}')


def test_an_invalid_series_is_dropped_when_asked():
    """With `on_invalid_line: drop` an invalid series text, or one OpenMetrics refuses, is a dropped line."""
    dropping = rules("    on_invalid_line: drop\n")
    assert dropping.relabel_series(b"1up") is INVALID_LINE
    assert dropping.openmetrics_refusal(b'up{job="a",}') is INVALID_LINE
    assert INVALID_LINE.drop_reason == "invalid_line"


@pytest.mark.parametrize(
    ("settings", "rewrites"),
    [("", False), (DROP_UP, False), (rename_up("x"), True)],
    ids=["no-rules", "drop-only", "replace"],
)
def test_only_rules_that_rewrite_labels_need_duplicate_checks(settings, rewrites):
    """keep/drop rules only remove series; other actions can make two series one, so they get an identity
    that is the same for the same label set in any order."""
    compiled = rules(settings)
    assert compiled.rewrites_labels is rewrites
    one, other = (compiled.relabel_series(text).identity for text in (b'up{a="1",b="2"}', b'up{b="2",a="1"}'))
    assert one == other
    assert (one != 0) is rewrites


# --- the memo ----------------------------------------------------------------------------------------------


def test_learnt_series_are_remembered_and_counted_as_misses():
    """Each new series text is a miss and is remembered with its result."""
    compiled = rules(DROP_UP)
    learnt = [compiled.learn_series(text) for text in (b"up", b'a{x="1"}', b"b")]
    assert compiled.misses == 3
    assert compiled.memo_entries == 3
    assert compiled.series == dict(zip((b"up", b'a{x="1"}', b"b"), learnt, strict=True))
    assert not compiled.memo_full


def test_a_memo_full_by_count_keeps_what_it_has():
    """Past relabel_cache_size a new series is relabeled but not remembered, and the memo is full."""
    compiled = rules("    relabel_cache_size: 2\n")
    for number in range(3):
        assert compiled.learn_series(f"m{number}".encode()).output == f"m{number}".encode()
    assert list(compiled.series) == [b"m0", b"m1"]
    assert compiled.memo_full


def test_a_memo_full_by_bytes_keeps_what_it_has(monkeypatch):
    """Past MEMO_BYTE_LIMIT (series text and output counted) a new series is not remembered."""
    monkeypatch.setattr(relay.rules, "MEMO_BYTE_LIMIT", 20)
    compiled = rules(rename_up("renamed"))
    compiled.learn_series(b"up")  # 2 bytes of text, 7 of output
    compiled.learn_series(b"a_long_series_name")  # 18 more: past the limit
    assert list(compiled.series) == [b"up"]
    assert compiled.memo_bytes == 9
    assert compiled.refused_insert
    assert compiled.memo_full


# (was full, samples, misses, whether the memo is forgotten)
RENEWALS = [
    pytest.param(True, 10, 10, True, id="full-and-unused"),
    pytest.param(True, 10, 9, True, id="full-and-used-by-one-series"),
    pytest.param(True, 10, 8, False, id="full-and-half-used"),
    pytest.param(False, 10, 10, False, id="not-full"),
]


@pytest.mark.parametrize(("was_full", "samples", "misses", "forgotten"), RENEWALS)
def test_a_full_memo_is_renewed_when_its_series_moved_on(was_full, samples, misses, forgotten):
    """After a body, a memo that was full and served less than half its entries is forgotten."""
    compiled = rules("    relabel_cache_size: 4\n")
    for number in range(4):
        compiled.learn_series(f"m{number}".encode())
    compiled.end_of_scrape(samples, misses, was_full=was_full)
    assert (compiled.memo_entries, compiled.memo_bytes == 0) == ((0, True) if forgotten else (4, False))


# --- tails (value and timestamp) ----------------------------------------------------------------------------

# (tail, OpenMetrics, what is learnt: True when already canonical, else the canonical form)
TAILS = [
    pytest.param(b" 1", False, True, id="value"),
    pytest.param(b" 1 123", False, True, id="value-and-timestamp"),
    pytest.param(b" NaN", False, True, id="nan"),
    pytest.param(b"  1", False, b" 1", id="two-blanks"),
    pytest.param(b"\t1", False, b" 1", id="tab"),
    pytest.param(b" 1 ", False, b" 1", id="trailing-blank"),
    pytest.param(b" 1", True, True, id="openmetrics-value"),
    pytest.param(b" 1 1.5", True, True, id="openmetrics-fractional-timestamp"),
]


@pytest.mark.parametrize(("tail", "openmetrics", "learnt"), TAILS)
def test_tails_are_learnt_in_canonical_form(tail, openmetrics, learnt):
    """What follows a series is kept as it came when canonical, else written with single blanks."""
    compiled = rules()
    assert compiled.learn_tail(tail, openmetrics=openmetrics) == learnt
    assert (compiled.openmetrics_tails if openmetrics else compiled.tails) == {tail: learnt}


# (tail, OpenMetrics, part of the error)
BAD_TAILS = [
    pytest.param(b" abc", False, "expected a value and an optional timestamp", id="not-a-number"),
    pytest.param(b" 1 1.5", False, "expected a value and an optional timestamp", id="fractional-timestamp"),
    pytest.param(b"  1", True, "expected ' value' and an optional ' timestamp'", id="openmetrics-two-blanks"),
    pytest.param(b" 1 ", True, "expected ' value' and an optional ' timestamp'", id="openmetrics-trailing"),
]


@pytest.mark.parametrize(("tail", "openmetrics", "message"), BAD_TAILS)
def test_bad_tails_fail_or_are_dropped(tail, openmetrics, message):
    """An invalid tail raises by default; with `on_invalid_line: drop` it is learnt as None (dropped)."""
    with pytest.raises(InvalidExpositionError, match=message):
        rules().learn_tail(tail, openmetrics=openmetrics)
    assert rules("    on_invalid_line: drop\n").learn_tail(tail, openmetrics=openmetrics) is None


def test_the_tail_memo_is_bounded_and_skips_long_tails():
    """The tail memo starts over when it holds relabel_cache_size tails; tails past 64 bytes are not kept."""
    compiled = rules("    relabel_cache_size: 2\n")
    for value in (b" 1", b" 2", b" 3"):
        compiled.learn_tail(value, openmetrics=False)
    long_tail = b" " + b"1" * 70
    compiled.learn_tail(long_tail, openmetrics=False)
    assert compiled.tails == {b" 3": True}


# --- limits -------------------------------------------------------------------------------------------------

# (limits, labels after relabeling, the violation)
VIOLATIONS = [
    pytest.param(Limits(), {"__name__": "up", "a": "x" * 1000}, "", id="no-limits"),
    pytest.param(Limits(label_limit=2), {"__name__": "up", "a": "1"}, "", id="at-label-limit"),
    pytest.param(
        Limits(label_limit=2),
        {"__name__": "up", "a": "1", "b": "2"},
        "a series has 3 labels, more than label_limit (2)",
        id="over-label-limit",
    ),
    pytest.param(
        Limits(label_name_length_limit=3),
        {"__name__": "up"},
        "label name '__name__'… is longer than label_name_length_limit",
        id="long-name",
    ),
    pytest.param(
        Limits(label_value_length_limit=3),
        {"__name__": "up", "a": "éé"},
        "the value of label 'a' is longer than label_value_length_limit",
        id="value-long-in-bytes",
    ),
    pytest.param(Limits(label_value_length_limit=4), {"__name__": "up", "a": "éé"}, "", id="value-at-limit"),
    pytest.param(Limits(sample_limit=1, line_length_limit=1), {"__name__": "up"}, "", id="not-label-limits"),
]


@pytest.mark.parametrize(("limits", "labels", "violation"), VIOLATIONS)
def test_label_limits(limits, labels, violation):
    """A label set breaks the first label limit it passes (lengths in bytes, as Prometheus counts) or none."""
    assert limits.violation(labels) == violation


def test_limits_come_from_the_upstream_and_apply_after_relabeling():
    """The upstream's limits are compiled in; a series is checked as the rules left it."""
    compiled = rules(
        "    label_limit: 1\n    sample_limit: 5\n    line_length_limit: 1000\n" + rename_up("x")
    )
    assert compiled.limits == Limits(sample_limit=5, label_limit=1, line_length_limit=1000)
    assert compiled.relabel_series(b"up").limit_error == ""
    assert (
        compiled.relabel_series(b'up{a="1"}').limit_error
        == "a series has 2 labels, more than label_limit (1)"
    )


@pytest.mark.parametrize(
    ("settings", "steps"),
    [("", 0), (DROP_UP, 1), ("    label_limit: 5\n" + DROP_UP, None), (rename_up("x"), None)],
    ids=["no-rules", "drop", "drop-with-label-limit", "replace"],
)
def test_filter_steps_only_for_rules_that_keep_or_drop_without_label_limits(settings, steps):
    """The compiled engine gets the rules as data only when they just keep or drop and no label limit
    applies; otherwise None."""
    found = rules(settings).filter_steps()
    assert (None if found is None else len(found)) == steps
