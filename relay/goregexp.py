"""Go's regexp semantics on top of RE2: what Go refuses, anchored matching, `$` templates, case mapping.

Prometheus compiles a relabel regex with Go's regexp; this module gives the same answers with RE2
(google-re2), whose syntax Go's regexp shares: linear time, `\\d` and `\\w` ASCII, no backreferences or
lookaround. What Go adds or differs in:

- Where RE2 accepts what Go refuses (`\\C`, non-ASCII group names, repeat counts of a billion or more)
  compiling refuses it as Go does. Named groups may be written `(?P<n>…)` or `(?<n>…)` (Go 1.22 and
  later).
- A regex is wrapped as `^(?s:REGEX)$` and searched for, as Go's `MatchString` does, so `.` also matches a
  newline, and a regex such as `a)|(b` escapes the anchoring exactly as it does in Prometheus.
- Texts are matched, and templates expanded, as the bytes Go would see (`go_bytes`): an undecodable byte
  that a lenient decoder kept as a surrogate escape goes back as that very byte.
- `$name` and `${name}` expand like Go's `Regexp.Expand`: the name is the longest run of letters, digits
  and `_`, so `$1x` is the group named `1x`; a missing group expands to nothing; `$$` is a `$`; a `$`
  not followed by a name stays as it is. `replace_all` steps over matches as `ReplaceAll` does.
- `go_lower`/`go_upper` map each character as Go's `strings.ToLower`/`ToUpper` do (one character to one,
  with no context: `ß` stays `ß`, and a word-final capital sigma becomes the ordinary small sigma, not
  the final form).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

# Go's repeat operator `{n}`, `{n,}`, `{n,m}`; a number with a leading zero makes the `{` a literal.
_REPEAT = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")
_MAX_REPEAT: Final = 1000  # RE2 refuses counts a little above it, but reads counts that overflow as text
_GO_GROUP_NAME = re.compile(r"[A-Za-z0-9_]+")
MEMO_SIZE: Final = 4096
"""The most results a per-regex memo of results by text holds; it is cleared when full."""
MEMO_TEXT_LIMIT: Final = 256
"""Longer texts are matched every time rather than remembered, so a memo stays small whatever comes in."""


def _re2_options() -> object:
    options = re2.Options()
    options.log_errors = False  # errors come back as exceptions; RE2 would also print them to stderr
    return options


RE2_OPTIONS: Final = _re2_options()
"""The options every RE2 regex here is compiled with."""


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


def go_bytes(text: str) -> bytes:
    """The bytes Go would see for `text`."""
    # surrogateescape gives back the very bytes a lenient decoder read, which is what Go would see.
    return text.encode("utf-8", "surrogateescape")


def go_string(data: bytes) -> str:
    """`data` as text, undecodable bytes kept as surrogate escapes (the inverse of `go_bytes`)."""
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


class AnchoredRegex:
    """A relabel regex compiled as Prometheus compiles it, with what templates need to expand against it."""

    __slots__ = ("_compiled", "_matched", "group_names", "matches_everything", "source")

    def __init__(self, source: str) -> None:
        """Compile `source`; raise ValueError saying why Go would refuse it (RE2's reason if RE2 refuses it,
        else every way in which Go is stricter than RE2)."""
        self.source = source
        names, refusals = _scan_pattern(source)
        anchored = f"^(?s:{source})$"
        try:
            compiled: _Regex = re2.compile(anchored, RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "invalid"
            text = go_string(reason) if isinstance(reason, bytes) else str(reason)
            # RE2 quotes what it read of the pattern it was given: show the user's, not the anchored form.
            shown = text.replace(anchored, source)
            refusals = [shown[:-2] if shown == text and shown.endswith(")$") else shown]
            if (len(source) - len(source.rstrip("\\"))) % 2:  # it escaped the anchoring's `)`
                refusals = ["trailing backslash at end of expression"]
        except UnicodeError:
            refusals = ["it is not valid UTF-8"]
        if refusals:
            raise ValueError("; ".join(refusals))
        self._compiled = compiled
        if len(names) != compiled.groups:
            # The scan misread the pattern. RE2 knows each name's first group: right unless names repeat.
            by_index = {index: name for name, index in re2.compile(source, RE2_OPTIONS).groupindex.items()}
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
            matched = self._compiled.search(go_bytes(text)) is not None
            if len(text) <= MEMO_TEXT_LIMIT:
                if len(self._matched) >= MEMO_SIZE:
                    self._matched.clear()
                self._matched[text] = matched
        return matched

    def replace_all(self, data: bytes, first: Span, template: Template) -> bytes:
        """Go's ReplaceAll, given the first match: each match, left to right, becomes `template` expanded."""
        out: list[bytes] = []
        last_end = search_pos = 0
        found: Span | None = first
        while found is not None:
            start, end = found(0)
            out.append(data[last_end:start])
            # An empty match right after a match is not replaced again.
            if end > last_end or start == 0:
                out.append(expand(template, data, found))
            last_end = end
            if end == len(data):
                break  # later matches could only be empty ones at the end, which the rule above skips
            width = _rune_width(data, search_pos)
            search_pos = search_pos + width if search_pos + width > end else max(end, search_pos + 1)
            found = self.find(data, search_pos)
        out.append(data[last_end:])
        return b"".join(out)


# --- templates: Go's Regexp.Expand ------------------------------------------------------------------

Template = tuple[bytes | tuple[int, ...], ...]
"""Literal bytes, and for each reference the groups it may take its text from (the first that matched)."""


def compile_template(template: str, group_names: Sequence[str]) -> Template:
    """Resolve every `$` reference in `template` against the regex's groups once, as Go's Expand would."""
    pieces: list[bytes | tuple[int, ...]] = []
    literal: list[str] = []

    def add_reference(groups: tuple[int, ...]) -> None:
        if literal:
            pieces.append(go_bytes("".join(literal)))
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
        pieces.append(go_bytes("".join(literal)))
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


def expand(template: Template, data: bytes, span: Span) -> bytes:
    """`template` filled in from the match with `span` in `data`, as Go's Expand does."""
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
