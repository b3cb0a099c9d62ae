"""Prometheus `metric_relabel_configs`: rules validated and compiled once, then applied to one series (pure).

The semantics are those of current Prometheus (3.x, `model/relabel/relabel.go`), read from its source:

- Defaults come from RelabelRuleSpec (`replace`, `;`, `(.*)`, `$1`); action names are case-insensitive.
- A regex is wrapped as `^(?s:REGEX)$` and searched for, as Go's `MatchString` does, so `.` also matches a
  newline, and a regex such as `a)|(b` escapes the anchoring exactly as it does in Prometheus.
- Matching uses RE2 (google-re2), whose syntax Go's regexp shares: linear time, `\\d` and `\\w` ASCII, no
  backreferences or lookaround. Where RE2 accepts what Go refuses (`\\C`, non-ASCII group names, repeat
  counts of a billion or more) compiling refuses it as Go does. Named groups may be written `(?P<n>…)`
  or `(?<n>…)` (Go 1.22 and later, so Prometheus 3).
- `$name` and `${name}` expand like Go's `Regexp.Expand`: the name is the longest run of letters, digits
  and `_`, so `$1x` is the group named `1x`; a missing group expands to nothing; `$$` is a `$`; a `$`
  not followed by a name stays as it is.
- `replace` does nothing when the regex does not match, and nothing when the expanded target is no valid
  label name; an empty expanded replacement deletes the target label. Missing source labels read as empty
  strings, joined with `separator` like the others. Labels with empty values are absent, in the input too.
- `hashmod`: MD5 of the joined value, the digest's last 8 bytes as a big-endian unsigned 64-bit number,
  modulo `modulus`. `lowercase`/`uppercase` map each character as Go's `strings.ToLower`/`ToUpper` do
  (one character to one, with no context: `ß` stays `ß`, and a word-final capital sigma becomes the
  ordinary small sigma, not the final form).
- `labelmap`, `labeldrop` and `labelkeep` match label *names*; `labelmap` visits the labels as Prometheus'
  label builder does (untouched input labels by name, then labels set by earlier rules in the order they
  were set), which decides the winner when two labels map to one name.
- An empty result counts as dropped, as in Prometheus' scrape loop.

Label names. Prometheus 3 accepts any UTF-8 label name unless a scrape job sets
`metric_name_validation_scheme: legacy`. The relay writes the classic text format, which every consumer
parses only with legacy names (`[a-zA-Z_][a-zA-Z0-9_]*`; quoted UTF-8 names need the newest parsers), so
the relay behaves as a Prometheus 3 job with the legacy scheme: every name a rule *writes* (a
`target_label`, a `labelmap` replacement, a `replace` target after expansion) must be a legacy name, while
`source_labels` may name any non-empty label, as Prometheus still allows there (reading a label that
cannot exist is harmless). Like Prometheus, `apply` does not check what it produced: `labelmap` can make a
name that starts with a digit (`$1` of `x_1a`), and `__name__` can be deleted or set to anything, which
Prometheus' scrape loop then refuses; the caller checks its output (see `is_valid_label_name`).

Where Prometheus 2.42 (Debian's package, the local oracle) differs, so a differential test must avoid it:
it anchors with `^(?:…)$`, so `.` does not match a newline; it refuses `(?<name>…)` and non-legacy
`source_labels`; it accepts `$` references in the targets of lowercase, uppercase, keepequal and
dropequal (later versions refuse them); when `replace` expands to an empty value it deletes
the label named by the unexpanded `target_label` (so `target_label: $1` deletes nothing); and `labelmap`
visits labels in plain name order. Its Go version's Unicode tables are older (case mapping, `\\p{…}`).

Known differences from Prometheus itself, all at the edges of the configuration: RelabelRuleSpec does not
record which fields were written, so `keepequal`/`dropequal` with an explicit `regex: (.*)` and
`labeldrop`/`labelkeep` with an explicit `source_labels: []` are accepted here (Prometheus refuses them);
a `modulus` of 2^64 or more is refused here (promtool accepts it, though no uint64 holds it). Label
values are taken to be valid UTF-8, as the text format requires.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, Protocol

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from relay.config import RelabelRuleSpec
from relay.errors import ConfigError, Problem

Labels = dict[str, str]
"""One series: label name to value, `__name__` included."""

ACTIONS: Final = (
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
)
_NEEDS_TARGET: Final = frozenset({"replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"})
_TARGET_IS_PLAIN_NAME: Final = frozenset({"hashmod", "lowercase", "uppercase", "keepequal", "dropequal"})
_DEFAULT = RelabelRuleSpec(location="")
_MAX_MODULUS: Final = 2**64 - 1
_NAME: Final = "__name__"

_LEGACY_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LEGACY_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# Go's repeat operator `{n}`, `{n,}`, `{n,m}`; a number with a leading zero makes the `{` a literal.
_REPEAT = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")
_GO_GROUP_NAME = re.compile(r"[A-Za-z0-9_]+")
_MAX_REPEAT: Final = 1000
# Per-rule memo of results by text (label names, metric names), cleared when full: names repeat across series.
_MEMO_SIZE: Final = 4096


def _re2_options() -> object:
    options = re2.Options()
    options.log_errors = False  # errors come back as exceptions; RE2 would also print them to stderr
    return options


_OPTIONS: Final = _re2_options()
# A legacy label name in which `$1`, `$name` and `${name}` may stand for parts: what Prometheus accepts as a
# `replace` target or `labelmap` replacement. Run by RE2 because its alternatives overlap (`$ab` is one
# reference, or `$a` then `b`), which can cost a backtracking engine exponential time on a long bad name.
_TEMPLATE_NAME = re2.compile(r"(?:[A-Za-z_]|\$(?:\{\w+\}|\w+))(?:\w|\$(?:\{\w+\}|\w+))*", _OPTIONS)


def is_valid_label_name(name: str) -> bool:
    """Whether `name` is a label name every text-format consumer accepts (the legacy character set)."""
    return _LEGACY_LABEL_NAME.fullmatch(name) is not None


def is_valid_metric_name(name: str) -> bool:
    """Whether `name` is a metric name every text-format consumer accepts (the legacy character set)."""
    return _LEGACY_METRIC_NAME.fullmatch(name) is not None


def _is_template_name(text: str) -> bool:
    return _TEMPLATE_NAME.fullmatch(text) is not None


# --- Go's case mapping ------------------------------------------------------------------------------

# Python maps these characters to several (full case mapping); Go maps every character to one (simple
# case mapping), and these are the simple mappings that differ from "leave it alone".
_SIMPLE_UPPER: Final = {
    **{chr(0x1F80 + offset): chr(0x1F88 + offset) for offset in range(8)},
    **{chr(0x1F90 + offset): chr(0x1F98 + offset) for offset in range(8)},
    **{chr(0x1FA0 + offset): chr(0x1FA8 + offset) for offset in range(8)},
    "\u1fb3": "\u1fbc",
    "\u1fc3": "\u1fcc",
    "\u1ff3": "\u1ffc",
}
_SIMPLE_LOWER: Final = {"\u0130": "i"}


def _map_chars(text: str, full: Callable[[str], str], simple: Mapping[str, str]) -> str:
    out = []
    for char in text:
        mapped = full(char)
        if len(mapped) != 1:
            mapped = simple.get(char, char)
        elif "\ud800" <= char <= "\udfff":
            mapped = "\ufffd"  # an undecodable byte: Go's strings.Map writes U+FFFD for it
        out.append(mapped)
    return "".join(out)


def go_lower(text: str) -> str:
    """`text` lowercased as Go's strings.ToLower does it."""
    return text.lower() if text.isascii() else _map_chars(text, str.lower, _SIMPLE_LOWER)


def go_upper(text: str) -> str:
    """`text` uppercased as Go's strings.ToUpper does it."""
    return text.upper() if text.isascii() else _map_chars(text, str.upper, _SIMPLE_UPPER)


# --- regular expressions ----------------------------------------------------------------------------


class _Match(Protocol):
    def span(self, group: int = 0) -> tuple[int, int]: ...


class _Regex(Protocol):
    @property
    def groups(self) -> int: ...

    def search(self, text: bytes, pos: int | None = None) -> _Match | None: ...


Span = Callable[[int], tuple[int, int]]
"""A match's group spans in bytes: group number to (start, end), (-1, -1) for a group that took no part."""


def _encode(text: str) -> bytes:
    # surrogateescape gives back the very bytes a lenient decoder read, which is what Go would see.
    return text.encode("utf-8", "surrogateescape")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _scan_pattern(pattern: str) -> tuple[list[str], list[str]]:
    """The pattern's capture groups in order (their names, '' if unnamed) and what Go refuses but RE2 takes.

    Walks the pattern as Go's parser does, just far enough to see groups, escapes and repeat counts;
    anything malformed is left for RE2 to refuse.
    """
    names: list[str] = []
    refusals: list[str] = []
    index, length = 0, len(pattern)
    while index < length:
        char = pattern[index]
        if char == "\\":
            after = pattern[index + 1 : index + 2]
            if after == "Q":  # \Q…\E: everything up to \E is literal text
                end = pattern.find("\\E", index + 2)
                index = length if end < 0 else end + 2
                continue
            if after == "C":
                refusals.append("\\C (any single byte) is not supported by Go's regexp")
            index = _skip_escape(pattern, index)
        elif char == "[":
            index = _skip_class(pattern, index)
        elif char == "(":
            index = _scan_group(pattern, index, names, refusals)
        elif char == "{" and (repeat := _REPEAT.match(pattern, index)) is not None:
            low, _, high = repeat.groups()
            if int(low) > _MAX_REPEAT or (high is not None and int(high) > _MAX_REPEAT):
                refusals.append(f"repeat count {repeat.group()} exceeds Go's limit of {_MAX_REPEAT}")
            index = repeat.end()
        else:
            index += 1
    return names, refusals


def _scan_group(pattern: str, index: int, names: list[str], refusals: list[str]) -> int:
    """Note the group opening at `index` if it captures; return where scanning goes on."""
    if not pattern.startswith(("(?P<", "(?<"), index):
        if not pattern.startswith("(?", index):
            names.append("")
        return index + 1
    start = index + (4 if pattern[index + 2] == "P" else 3)
    end = pattern.find(">", start)
    if end < 0:
        return len(pattern)  # RE2 refuses the unclosed name
    name = pattern[start:end]
    if name and _GO_GROUP_NAME.fullmatch(name) is None:
        refusals.append(f"group name {name!r} must be ASCII letters, digits and '_' in Go")
    names.append(name)
    return end + 1


def _skip_escape(pattern: str, index: int) -> int:
    """The index after the escape at `index`; `\\x{…}`, `\\p{…}` and `\\P{…}` end at their brace."""
    if pattern[index + 1 : index + 2] in ("x", "p", "P") and pattern[index + 2 : index + 3] == "{":
        end = pattern.find("}", index + 3)
        return len(pattern) if end < 0 else end + 1
    return index + 2


def _skip_class(pattern: str, index: int) -> int:
    """The index after the character class `[…]` that starts at `index`."""
    index += 1
    if pattern.startswith("^", index):
        index += 1
    first = True  # a `]` right after `[` or `[^` is a literal
    while index < len(pattern):
        char = pattern[index]
        if char == "]" and not first:
            return index + 1
        first = False
        if pattern.startswith("[:", index) and (end := pattern.find(":]", index + 2)) >= 0:
            index = end + 2
        elif char == "\\":
            index = _skip_escape(pattern, index)
        else:
            index += 1
    return index


class _WholeMatch:
    """The match of the default regex `(.*)`, which is the whole text in group 0 and group 1."""

    __slots__ = ("_end",)

    def __init__(self, end: int) -> None:
        self._end = end

    def span(self, group: int = 0) -> tuple[int, int]:
        return (0, self._end) if group <= 1 else (-1, -1)


class _AnchoredRegex:
    """A relabel regex compiled as Prometheus compiles it, with what templates need to expand against it."""

    __slots__ = ("_compiled", "_matched", "group_names", "matches_everything", "source")

    def __init__(self, source: str) -> None:
        """Compile `source`; raise ValueError with every reason Go would refuse it."""
        self.source = source
        names, refusals = _scan_pattern(source)
        try:
            compiled: _Regex = re2.compile(f"^(?s:{source})$", _OPTIONS)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "invalid"
            refusals.insert(0, _decode(reason) if isinstance(reason, bytes) else str(reason))
        except UnicodeError:
            refusals.insert(0, "it is not valid UTF-8")
        if refusals:
            raise ValueError("; ".join(refusals))
        self._compiled = compiled
        if len(names) != compiled.groups:
            # The scan misread the pattern. RE2 knows each name's first group: right unless names repeat.
            by_index = {index: name for name, index in re2.compile(source, _OPTIONS).groupindex.items()}
            names = [by_index.get(index, "") for index in range(1, compiled.groups + 1)]
        self.group_names: tuple[str, ...] = tuple(names)
        # `(.*)` under `(?s:` matches any text whole; skipping the engine for it is the common fast path.
        self.matches_everything = source == "(.*)"
        self._matched: dict[str, bool] = {}

    def find(self, data: bytes, pos: int = 0) -> Span | None:
        """The first match at or after byte `pos` (`^` still means the start of `data`), as its spans."""
        if self.matches_everything:
            return _WholeMatch(len(data)).span if pos == 0 else None
        found = self._compiled.search(data, pos)
        return found.span if found is not None else None

    def matches(self, text: str) -> bool:
        """Whether the regex matches `text`, as Go's MatchString."""
        if self.matches_everything:
            return True
        matched = self._matched.get(text)
        if matched is None:
            matched = self._compiled.search(_encode(text)) is not None
            if len(self._matched) >= _MEMO_SIZE:
                self._matched.clear()
            self._matched[text] = matched
        return matched


# --- templates: Go's Regexp.Expand ------------------------------------------------------------------

Template = tuple[bytes | tuple[int, ...], ...]
"""Literal bytes, and for each reference the groups it may take its text from (the first that matched)."""


def _compile_template(template: str, group_names: Sequence[str]) -> Template:
    """Resolve every `$` reference in `template` against the regex's groups once, as Go's Expand would."""
    pieces: list[bytes | tuple[int, ...]] = []
    literal: list[str] = []

    def add_reference(groups: tuple[int, ...]) -> None:
        if literal:
            pieces.append(_encode("".join(literal)))
            literal.clear()
        if groups:
            pieces.append(groups)

    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        literal.append(before)
        if not dollar:
            break
        if rest.startswith("$"):
            literal.append("$")
            rest = rest[1:]
            continue
        reference = _parse_reference(rest)
        if reference is None:
            literal.append("$")  # not a reference: the `$` is kept as text
            continue
        name, rest = reference
        number = _group_number(name)
        if number is not None:
            add_reference((number,) if number <= len(group_names) else ())
        else:
            add_reference(tuple(index for index, each in enumerate(group_names, 1) if each == name))
    if literal:
        pieces.append(_encode("".join(literal)))
    return tuple(piece for piece in pieces if piece != b"")


def _parse_reference(text: str) -> tuple[str, str] | None:
    """The name of the reference at the start of `text` (after its `$`) and the text after it, or None."""
    braced = text.startswith("{")
    start = 1 if braced else 0
    end = start
    while end < len(text) and (text[end].isalpha() or text[end].isdecimal() or text[end] == "_"):
        end += 1
    if end == start:
        return None
    if braced:
        if not text.startswith("}", end):
            return None
        return text[start:end], text[end + 1 :]
    return text[start:end], text[end:]


def _group_number(name: str) -> int | None:
    """The group number a reference name stands for: ASCII digits without a leading zero, below 10^9."""
    if not (name.isascii() and name.isdigit()) or (name[0] == "0" and len(name) > 1) or len(name) > 9:
        return None
    return int(name)


def _expand(template: Template, data: bytes, span: Span) -> bytes:
    out: list[bytes] = []
    for piece in template:
        if isinstance(piece, bytes):
            out.append(piece)
            continue
        for group in piece:
            start, end = span(group)
            if start >= 0:
                out.append(data[start:end])
                break
    return b"".join(out)


def _rune_width(data: bytes, pos: int) -> int:
    """The length of the UTF-8 character at `pos` (0 at the end), as Go's DecodeRune steps over it."""
    if pos >= len(data):
        return 0
    lead = data[pos]
    if 0xC0 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF8:
        return 4
    return 1


# --- the label set being relabeled -------------------------------------------------------------------


class _LabelState:
    """The labels between rules, kept so that iteration order is that of Prometheus' labels.Builder."""

    __slots__ = ("labels", "written")

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.labels: Labels = {name: value for name, value in labels.items() if value}
        # Names set by a rule, in the order the builder lists them: a set adds the name at the end
        # unless it is already there; a delete takes it out.
        self.written: set[str] = set()

    def get(self, name: str) -> str:
        return self.labels.get(name, "")

    def set(self, name: str, value: str) -> None:
        if not value:
            self.delete(name)
        elif name in self.written:
            self.labels[name] = value
        else:
            self.labels.pop(name, None)
            self.labels[name] = value
            self.written.add(name)

    def delete(self, name: str) -> None:
        self.labels.pop(name, None)
        self.written.discard(name)

    def snapshot(self) -> list[tuple[str, str]]:
        """The labels as the builder ranges over them: untouched input labels by name, then written ones."""
        if not self.written:
            return sorted(self.labels.items())
        untouched = sorted(item for item in self.labels.items() if item[0] not in self.written)
        return untouched + [item for item in self.labels.items() if item[0] in self.written]


# --- compiled rules ----------------------------------------------------------------------------------


class _Rule:
    """One compiled rule; `apply` changes the state and says whether the series is kept."""

    __slots__ = ("location", "separator", "source_labels")

    def __init__(self, spec: RelabelRuleSpec) -> None:
        self.location = spec.location
        self.source_labels = spec.source_labels
        self.separator = spec.separator

    def joined(self, state: _LabelState) -> str:
        if len(self.source_labels) == 1:
            return state.get(self.source_labels[0])
        return self.separator.join(state.get(name) for name in self.source_labels)

    def apply(self, state: _LabelState) -> bool:
        raise NotImplementedError

    def reads_only_name(self) -> bool:
        """True when the rule only keeps or drops, by nothing but `__name__`."""
        return False


class _Filter(_Rule):
    """keep and drop: the series' fate by whether the regex matches the joined source values."""

    __slots__ = ("keep_on_match", "regex")

    def __init__(self, spec: RelabelRuleSpec, regex: _AnchoredRegex, *, keep_on_match: bool) -> None:
        super().__init__(spec)
        self.regex = regex
        self.keep_on_match = keep_on_match

    def apply(self, state: _LabelState) -> bool:
        return self.regex.matches(self.joined(state)) == self.keep_on_match

    def reads_only_name(self) -> bool:
        return all(name == _NAME for name in self.source_labels)


class _Equal(_Rule):
    """keepequal and dropequal: the series' fate by whether the target label equals the joined values."""

    __slots__ = ("keep_on_equal", "target")

    def __init__(self, spec: RelabelRuleSpec, *, keep_on_equal: bool) -> None:
        super().__init__(spec)
        self.target = spec.target_label
        self.keep_on_equal = keep_on_equal

    def apply(self, state: _LabelState) -> bool:
        return (state.get(self.target) == self.joined(state)) == self.keep_on_equal

    def reads_only_name(self) -> bool:
        return self.target == _NAME and all(name == _NAME for name in self.source_labels)


class _Replace(_Rule):
    """replace: write the expanded replacement to the expanded target when the regex matches."""

    __slots__ = ("regex", "replacement", "static_target", "target")

    def __init__(self, spec: RelabelRuleSpec, regex: _AnchoredRegex) -> None:
        super().__init__(spec)
        self.regex = regex
        # A target without `$` was checked when compiling; one with references is checked once expanded.
        self.static_target = spec.target_label if "$" not in spec.target_label else None
        self.target = _compile_template(spec.target_label, regex.group_names)
        self.replacement = _compile_template(spec.replacement, regex.group_names)

    def apply(self, state: _LabelState) -> bool:
        data = _encode(self.joined(state))
        span = self.regex.find(data)
        if span is None:
            return True
        target = self.static_target
        if target is None:
            target = _decode(_expand(self.target, data, span))
            if not is_valid_label_name(target):
                return True
        state.set(target, _decode(_expand(self.replacement, data, span)))
        return True


class _CaseMap(_Rule):
    """lowercase and uppercase: write the joined values, case-mapped, to the target."""

    __slots__ = ("mapping", "target")

    def __init__(self, spec: RelabelRuleSpec, mapping: Callable[[str], str]) -> None:
        super().__init__(spec)
        self.target = spec.target_label
        self.mapping = mapping

    def apply(self, state: _LabelState) -> bool:
        state.set(self.target, self.mapping(self.joined(state)))
        return True


class _HashMod(_Rule):
    """hashmod: write a number in [0, modulus) derived from the MD5 of the joined values to the target."""

    __slots__ = ("modulus", "target")

    def __init__(self, spec: RelabelRuleSpec) -> None:
        super().__init__(spec)
        self.target = spec.target_label
        self.modulus = spec.modulus

    def apply(self, state: _LabelState) -> bool:
        digest = hashlib.md5(_encode(self.joined(state)), usedforsecurity=False).digest()
        state.set(self.target, str(int.from_bytes(digest[8:], "big") % self.modulus))
        return True


class _LabelMap(_Rule):
    """labelmap: copy each label whose name matches to the name made by replacing the match."""

    __slots__ = ("_mapped", "regex", "replacement")

    def __init__(self, spec: RelabelRuleSpec, regex: _AnchoredRegex) -> None:
        super().__init__(spec)
        self.regex = regex
        self.replacement = _compile_template(spec.replacement, regex.group_names)
        self._mapped: dict[str, str | None] = {}

    def apply(self, state: _LabelState) -> bool:
        for name, value in state.snapshot():
            new_name = self._map(name)
            if new_name is not None:
                state.set(new_name, value)
        return True

    def _map(self, name: str) -> str | None:
        """The name a label called `name` is copied to, or None when the regex does not match it."""
        if name in self._mapped:
            return self._mapped[name]
        data = _encode(name)
        span = self.regex.find(data)
        new_name = self._replace_all(data, span) if span is not None else None
        if len(self._mapped) >= _MEMO_SIZE:
            self._mapped.clear()
        self._mapped[name] = new_name
        return new_name

    def _replace_all(self, data: bytes, span: Span) -> str:
        """Go's ReplaceAllString: every match, left to right, replaced by the expanded replacement."""
        out: list[bytes] = []
        last_end = search_pos = 0
        found: Span | None = span
        while found is not None:
            start, end = found(0)
            out.append(data[last_end:start])
            # An empty match right after a match is not replaced again.
            if end > last_end or start == 0:
                out.append(_expand(self.replacement, data, found))
            last_end = end
            if end == len(data):
                break  # later matches could only be empty ones at the end, which the rule above skips
            width = _rune_width(data, search_pos)
            search_pos = search_pos + width if search_pos + width > end else max(end, search_pos + 1)
            found = self.regex.find(data, search_pos)
        out.append(data[last_end:])
        return _decode(b"".join(out))


class _LabelFilter(_Rule):
    """labeldrop and labelkeep: remove the labels whose names match (labeldrop) or do not (labelkeep)."""

    __slots__ = ("drop_on_match", "regex")

    def __init__(self, spec: RelabelRuleSpec, regex: _AnchoredRegex, *, drop_on_match: bool) -> None:
        super().__init__(spec)
        self.regex = regex
        self.drop_on_match = drop_on_match

    def apply(self, state: _LabelState) -> bool:
        for name in list(state.labels):
            if self.regex.matches(name) == self.drop_on_match:
                state.delete(name)
        return True


# --- validation --------------------------------------------------------------------------------------


def _check(spec: RelabelRuleSpec) -> tuple[list[Problem], _AnchoredRegex | None]:
    """Every reason Prometheus would refuse `spec` (it stops at the first), and the compiled regex."""
    problems: list[Problem] = []

    def problem(field: str, message: str) -> None:
        problems.append(Problem(f"{spec.location}.{field}" if field else spec.location, message))

    action = go_lower(spec.action)
    choices = ", ".join(ACTIONS)
    if not spec.action:
        problem("action", f"is empty; use one of {choices}")
    elif action not in ACTIONS:
        problem("action", f"unknown relabel action {spec.action!r}; use one of {choices}")
    for index, name in enumerate(spec.source_labels):
        if not name:
            problem(f"source_labels[{index}]", "a label name must not be empty")
    regex: _AnchoredRegex | None = None
    try:
        regex = _AnchoredRegex(spec.regex)
    except ValueError as exc:
        problem("regex", f"{spec.regex!r} is not a valid RE2 regular expression as Go reads it: {exc}")
    if spec.modulus > _MAX_MODULUS:
        problem("modulus", "must be below 2^64: Prometheus reads it as an unsigned 64-bit number")
    if action in ACTIONS:
        _check_action(spec, action, problem)
    return problems, regex


_NAME_RULE: Final = "letters, digits and '_', not starting with a digit"
_TEMPLATE_RULE: Final = f"a label name ({_NAME_RULE}) in which $1, $name or ${{name}} may stand for parts"


def _check_action(spec: RelabelRuleSpec, action: str, problem: Callable[[str, str], None]) -> None:
    """The checks that depend on the action, in the order Prometheus makes them."""
    target = spec.target_label
    if action == "hashmod" and spec.modulus == 0:
        problem("modulus", "hashmod needs a modulus greater than 0")
    if action in _NEEDS_TARGET and not target:
        problem("target_label", f"{action} needs a target_label to write to")
    elif action == "replace" and "$" in target and not _is_template_name(target):
        problem("target_label", f"{target!r} is not a valid target for replace: {_TEMPLATE_RULE}")
    elif action == "replace" and "$" not in target and not is_valid_label_name(target):
        problem("target_label", f"{target!r} is not a valid label name ({_NAME_RULE})")
    elif action in _TARGET_IS_PLAIN_NAME and not is_valid_label_name(target):
        problem("target_label", f"{target!r} is not a valid label name for {action} ({_NAME_RULE}; no $)")
    if action in ("lowercase", "uppercase") and spec.replacement != _DEFAULT.replacement:
        problem("replacement", f"{action} takes no replacement; remove it")
    if action == "labelmap" and not _is_template_name(spec.replacement):
        problem("replacement", f"{spec.replacement!r} is not a valid labelmap replacement: {_TEMPLATE_RULE}")
    if action in ("keepequal", "dropequal"):
        for field in _set_fields(spec, ("regex", "modulus", "separator", "replacement")):
            problem(field, f"{action} uses only source_labels and target_label; remove {field}")
    if action in ("labeldrop", "labelkeep"):
        extra = ("source_labels", "target_label", "modulus", "separator", "replacement")
        for field in _set_fields(spec, extra):
            problem(field, f"{action} uses only regex (matched against label names); remove {field}")


def _set_fields(spec: RelabelRuleSpec, fields: Sequence[str]) -> Iterator[str]:
    """The named fields whose values differ from Prometheus' defaults."""
    return (field for field in fields if getattr(spec, field) != getattr(_DEFAULT, field))


def _build(spec: RelabelRuleSpec, regex: _AnchoredRegex) -> _Rule:  # noqa: PLR0911 - one return per action
    action = go_lower(spec.action)
    if action in ("keep", "drop"):
        return _Filter(spec, regex, keep_on_match=action == "keep")
    if action in ("keepequal", "dropequal"):
        return _Equal(spec, keep_on_equal=action == "keepequal")
    if action == "replace":
        return _Replace(spec, regex)
    if action in ("lowercase", "uppercase"):
        return _CaseMap(spec, go_lower if action == "lowercase" else go_upper)
    if action == "hashmod":
        return _HashMod(spec)
    if action == "labelmap":
        return _LabelMap(spec, regex)
    return _LabelFilter(spec, regex, drop_on_match=action == "labeldrop")


# --- the program -------------------------------------------------------------------------------------


class RelabelProgram:
    """An upstream's metric_relabel_configs, compiled; apply them in order to one series at a time."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Sequence[_Rule]) -> None:
        self._rules = tuple(rules)

    @classmethod
    def compile(cls, specs: Sequence[RelabelRuleSpec], *, source: str = "<relabel rules>") -> RelabelProgram:
        """Validate and compile the rules; ConfigError (from `source`) lists every problem of every rule."""
        problems: list[Problem] = []
        rules: list[_Rule] = []
        for spec in specs:
            found, regex = _check(spec)
            problems.extend(found)
            if not found and regex is not None:
                rules.append(_build(spec, regex))
        if problems:
            raise ConfigError(source, problems)
        return cls(rules)

    @property
    def is_empty(self) -> bool:
        """True when there are no rules, so every series passes unchanged."""
        return not self._rules

    @property
    def locations(self) -> tuple[str, ...]:
        """Each rule's place in the configuration, in order."""
        return tuple(rule.location for rule in self._rules)

    def reads_only_name(self) -> bool:
        """True when every rule only keeps or drops by `__name__`: then the name alone decides a series."""
        return all(rule.reads_only_name() for rule in self._rules)

    def apply(self, labels: Mapping[str, str]) -> Labels | None:
        """The series' labels after every rule, or None if dropped; `labels` is left as it is.

        Labels with empty values are absent from the result (and ignored in the input). An empty
        result is None. The result may lack `__name__` or hold names that are not legacy names;
        Prometheus refuses such a scrape, so the caller checks.
        """
        state = _LabelState(labels)
        for rule in self._rules:
            if not rule.apply(state):
                return None
        return state.labels or None

    def trace(self, labels: Mapping[str, str]) -> list[tuple[str, Labels | None]]:
        """Each rule's location and the labels after it (None: it dropped the series, and the trace ends)."""
        state = _LabelState(labels)
        steps: list[tuple[str, Labels | None]] = []
        for rule in self._rules:
            if not rule.apply(state):
                steps.append((rule.location, None))
                break
            steps.append((rule.location, dict(state.labels)))
        return steps
