"""Go's regexp dialect over RE2: what compiles, anchored matching, `$` templates, ReplaceAll, case mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import relay.goregexp
from relay.goregexp import (
    AnchoredRegex,
    compile_template,
    expand,
    go_bytes,
    go_lower,
    go_string,
    go_upper,
)

# (regex, the refusal: RE2's reason as the user wrote the regex, else every way Go is stricter than RE2)
REFUSALS = [
    pytest.param("(", "missing ): (", id="re2-names-the-users-pattern"),
    pytest.param("a(?=b)", "invalid perl operator: (?=", id="lookahead"),
    pytest.param("x**", "bad repetition operator: **", id="double-star"),
    pytest.param("x{1001}", "invalid repetition size: {1001}", id="re2-repeat-limit"),
    pytest.param("a\\", "trailing backslash at end of expression", id="trailing-backslash"),
    pytest.param("(?P<a-b>x)", "invalid named capture group: (?P<a-b>", id="dash-in-group-name"),
    pytest.param(r"\C", "\\C (any single byte) is not supported by Go's regexp", id="any-byte"),
    pytest.param(
        "(?P<é>a)", "group name 'é' must be ASCII letters, digits and '_' in Go", id="non-ascii-name"
    ),
    pytest.param(
        "x{1000000000}", "repeat count {1000000000} exceeds Go's limit of 1000", id="repeat-re2-reads-as-text"
    ),
    pytest.param(
        r"\C(?P<é>a)",
        "\\C (any single byte) is not supported by Go's regexp; group name 'é' must be ASCII letters, digits "
        "and '_' in Go",
        id="every-go-refusal",
    ),
    pytest.param(r"\C(", "missing ): \\C(", id="re2-refusal-first"),
]


@pytest.mark.parametrize(("regex", "message"), REFUSALS)
def test_refusals_say_why(regex, message):
    """A regex Go's regexp refuses is refused with the reason, in terms of the regex as written."""
    with pytest.raises(ValueError) as refused:  # noqa: PT011 - the exact message is checked below
        AnchoredRegex(regex)
    assert str(refused.value) == message


# (regex, text, whether it matches)
MATCHES = [
    pytest.param("abc", "abc", True, id="whole"),
    pytest.param("abc", "xabc", False, id="anchored-start"),
    pytest.param("abc", "abcx", False, id="anchored-end"),
    pytest.param("a.b", "a\nb", True, id="dot-matches-newline"),
    pytest.param("a)|(b", "ax", True, id="escaped-anchoring-start"),
    pytest.param("a)|(b", "xb", True, id="escaped-anchoring-end"),
    pytest.param("a)|(b", "xa", False, id="escaped-anchoring-neither"),
    pytest.param(r"\d+", "١٢", False, id="ascii-digits"),
    pytest.param("(?i)UP", "up", True, id="flags"),
    pytest.param("(?<n>a)", "a", True, id="go-1.22-named-group"),
    pytest.param("(.*)", "anything\nat all", True, id="default-regex"),
]


@pytest.mark.parametrize(("regex", "text", "matched"), MATCHES)
def test_matching_is_anchored_as_prometheus_does_it(regex, text, matched):
    """A regex matches as `^(?s:REGEX)$` does under Go's MatchString."""
    assert AnchoredRegex(regex).matches(text) is matched


def test_results_stay_right_past_the_memo(monkeypatch):
    """Results of a regex are remembered per text; a full memo starts over and long texts are not kept,
    and no answer changes."""
    monkeypatch.setattr(relay.goregexp, "MEMO_SIZE", 8)
    monkeypatch.setattr(relay.goregexp, "MEMO_TEXT_LIMIT", 3)
    even = AnchoredRegex("n[0-9]*[02468]")
    for _ in range(2):
        assert [even.matches(f"n{number}") for number in range(0, 200, 3)] == [
            number % 2 == 0 for number in range(0, 200, 3)
        ]


@pytest.mark.parametrize(
    ("regex", "names"),
    [
        ("(a)(b)", ("", "")),
        ("(?P<first>a)(b)(?<third>c)", ("first", "", "third")),
        ("(?:a)(?P<n>b)", ("n",)),
        ("(?P<n>a)|(?P<n>b)", ("n", "n")),
        (r"[(](\()\Q(\E", ("",)),
    ],
)
def test_group_names(regex, names):
    """Each capturing group in order with its name ('' if unnamed); non-capturing and literal parentheses
    are no groups."""
    assert AnchoredRegex(regex).group_names == names


def test_find_keeps_the_start_of_the_text_as_the_anchor():
    """Searching from a later byte finds matches there, yet `^` still means the start of the text."""
    escaped = AnchoredRegex("a)|(b")
    span = escaped.find(b"ab", 1)
    assert span is not None
    assert span(0) == (1, 2)
    assert AnchoredRegex("a").find(b"ba", 1) is None
    whole = AnchoredRegex("(.*)")
    span = whole.find(b"abc")
    assert span is not None
    assert (span(0), span(1), span(2)) == ((0, 3), (0, 3), (-1, -1))
    assert whole.find(b"abc", 1) is None


# (template, what it expands to for regex `(a)(?P<x>b)?` matching "a": group 2 takes no part)
TEMPLATES = [
    pytest.param("$1-$x", b"a-", id="number-and-name"),
    pytest.param("${1}x", b"ax", id="braced"),
    pytest.param("$1x", b"", id="longest-name-is-group-1x"),
    pytest.param("$$1", b"$1", id="dollar-dollar"),
    pytest.param("$", b"$", id="lone-dollar"),
    pytest.param("a$-b", b"a$-b", id="dollar-without-name"),
    pytest.param("${ 1}", b"${ 1}", id="braces-without-name"),
    pytest.param("$9", b"", id="missing-group"),
    pytest.param("$01", b"", id="leading-zero-is-a-name"),
    pytest.param("[${x}]", b"[]", id="group-that-took-no-part"),
]


@pytest.mark.parametrize(("template", "expanded"), TEMPLATES)
def test_templates_expand_as_go_does(template, expanded):
    """`$name` and `${name}` expand as Go's Regexp.Expand: longest name, missing groups empty, `$$` a `$`."""
    regex = AnchoredRegex("(a)(?P<x>b)?")
    span = regex.find(b"a")
    assert span is not None
    assert expand(compile_template(template, regex.group_names), b"a", span) == expanded


def test_a_repeated_group_name_takes_the_first_group_that_matched():
    """With two groups of one name, a reference to it takes whichever of them matched."""
    regex = AnchoredRegex("(?P<n>a)|(?P<n>b)")
    template = compile_template("[$n]", regex.group_names)
    for text in (b"a", b"b"):
        span = regex.find(text)
        assert span is not None
        assert expand(template, text, span) == b"[" + text + b"]"


# (regex, text, template, Go's ReplaceAll)
REPLACEMENTS = [
    pytest.param("a(.*)", b"abc", "$1", b"bc", id="one-match"),
    pytest.param("(.*)", b"abc", "x$1", b"xabc", id="default-regex"),
    pytest.param("a)|(b", b"aab", "X", b"XaX", id="two-matches"),
    pytest.param(")|(", b"ab", "X", b"XabX", id="empty-matches-at-both-ends"),
    pytest.param(")|(", "é".encode(), "X", "XéX".encode(), id="steps-over-whole-characters"),
]


@pytest.mark.parametrize(("regex", "text", "template", "replaced"), REPLACEMENTS)
def test_replace_all_as_go_does(regex, text, template, replaced):
    """Each match, left to right, becomes the expanded template, as Go's ReplaceAll does."""
    compiled = AnchoredRegex(regex)
    first = compiled.find(text)
    assert first is not None
    assert compiled.replace_all(text, first, compile_template(template, compiled.group_names)) == replaced


def test_undecodable_bytes_round_trip():
    """A byte that is not UTF-8 is kept as a surrogate escape and goes back to Go as that very byte."""
    assert go_string(b"a\xff") == "a\udcff"
    assert go_bytes("a\udcff") == b"a\xff"
    assert go_bytes(go_string(b"\xff\xfe")) == b"\xff\xfe"


# (text, Go's strings.ToLower, Go's strings.ToUpper)
CASES = [
    pytest.param("Up_Total", "up_total", "UP_TOTAL", id="ascii"),
    pytest.param("ß", "ß", "ß", id="sharp-s-stays"),
    pytest.param("İ", "i", "İ", id="dotted-capital-i"),
    pytest.param("\u03a3\u0391\u03a3", "\u03c3\u03b1\u03c3", "\u03a3\u0391\u03a3", id="no-final-sigma"),
    pytest.param("ᾳ", "ᾳ", "ᾼ", id="simple-titlecase-mapping"),
    pytest.param("a\udcff", "a\ufffd", "A\ufffd", id="undecodable-byte"),
]


@pytest.mark.parametrize(("text", "lower", "upper"), CASES)
def test_case_mapping_as_go_does(text, lower, upper):
    """Each character maps to one, with no context, as Go's simple case mapping does."""
    assert (go_lower(text), go_upper(text)) == (lower, upper)


@given(text=st.text(max_size=20))
def test_case_mapping_is_one_character_to_one(text):
    """Go's case mapping never changes the number of characters, and agrees with Python's on ASCII."""
    assert len(go_lower(text)) == len(go_upper(text)) == len(text)
    if text.isascii():
        assert (go_lower(text), go_upper(text)) == (text.lower(), text.upper())
