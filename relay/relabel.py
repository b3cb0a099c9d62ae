"""Prometheus `metric_relabel_configs`: rules validated and compiled once, then applied to one series (pure).

The semantics are those of current Prometheus (3.x, `model/relabel/relabel.go`), read from its source:

- Defaults come from RelabelRuleSpec (`replace`, `;`, `(.*)`, `$1`); action names are case-insensitive.
- Regexes compile, match and expand `$1`, `$name` and `${name}` as Go's regexp does (`relay.goregexp`):
  RE2 syntax with what Go refuses refused, `(?<n>…)` groups as in Prometheus 3, and each regex wrapped as
  `^(?s:REGEX)$`, so `.` also matches a newline and `a)|(b` escapes the anchoring as in Prometheus.
- `replace` does nothing when the regex does not match, and nothing when the expanded target is no valid
  label name; an empty expanded replacement deletes the target label. Missing source labels read as empty
  strings, joined with `separator` like the others. Labels with empty values are absent, in the input too.
- `hashmod`: MD5 of the joined value, the digest's last 8 bytes as a big-endian unsigned 64-bit number,
  modulo `modulus`. `lowercase`/`uppercase` map each character as Go's `strings.ToLower`/`ToUpper` do.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, NamedTuple

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from relay.config import RelabelRuleSpec
from relay.errors import ConfigError, Problem
from relay.exposition import LEGACY_LABEL_NAME
from relay.goregexp import (
    MEMO_SIZE,
    MEMO_TEXT_LIMIT,
    RE2_OPTIONS,
    AnchoredRegex,
    compile_template,
    expand,
    go_bytes,
    go_lower,
    go_string,
    go_upper,
)

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

# A legacy label name in which `$1`, `$name` and `${name}` may stand for parts: what Prometheus accepts as a
# `replace` target or `labelmap` replacement. Run by RE2 because its alternatives overlap (`$ab` is one
# reference, or `$a` then `b`), which can cost a backtracking engine exponential time on a long bad name.
_TEMPLATE_NAME = re2.compile(r"(?:[A-Za-z_]|\$(?:\{\w+\}|\w+))(?:\w|\$(?:\{\w+\}|\w+))*", RE2_OPTIONS)


def is_valid_label_name(name: str) -> bool:
    """Whether `name` is a label name every text-format consumer accepts (the legacy character set)."""
    return LEGACY_LABEL_NAME.fullmatch(name) is not None


def _is_template_name(text: str) -> bool:
    return _TEMPLATE_NAME.fullmatch(text) is not None


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
        return self.separator.join([state.get(name) for name in self.source_labels])  # a list joins faster

    def apply(self, state: _LabelState) -> bool:
        raise NotImplementedError


class _Filter(_Rule):
    """keep and drop: the series' fate by whether the regex matches the joined source values."""

    __slots__ = ("keep_on_match", "regex")

    def __init__(self, spec: RelabelRuleSpec, regex: AnchoredRegex, *, keep_on_match: bool) -> None:
        super().__init__(spec)
        self.regex = regex
        self.keep_on_match = keep_on_match

    def apply(self, state: _LabelState) -> bool:
        return self.regex.matches(self.joined(state)) == self.keep_on_match


class _Equal(_Rule):
    """keepequal and dropequal: the series' fate by whether the target label equals the joined values."""

    __slots__ = ("keep_on_equal", "target")

    def __init__(self, spec: RelabelRuleSpec, *, keep_on_equal: bool) -> None:
        super().__init__(spec)
        self.target = spec.target_label
        self.keep_on_equal = keep_on_equal

    def apply(self, state: _LabelState) -> bool:
        return (state.get(self.target) == self.joined(state)) == self.keep_on_equal


class _Replace(_Rule):
    """replace: write the expanded replacement to the expanded target when the regex matches."""

    __slots__ = ("regex", "replacement", "static_target", "target")

    def __init__(self, spec: RelabelRuleSpec, regex: AnchoredRegex) -> None:
        super().__init__(spec)
        self.regex = regex
        # A target without `$` was checked when compiling; one with references is checked once expanded.
        self.static_target = spec.target_label if "$" not in spec.target_label else None
        self.target = compile_template(spec.target_label, regex.group_names)
        self.replacement = compile_template(spec.replacement, regex.group_names)

    def apply(self, state: _LabelState) -> bool:
        data = go_bytes(self.joined(state))
        span = self.regex.find(data)
        if span is None:
            return True
        target = self.static_target
        if target is None:
            target = go_string(expand(self.target, data, span))
            if not is_valid_label_name(target):
                return True
        state.set(target, go_string(expand(self.replacement, data, span)))
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
        digest = hashlib.md5(go_bytes(self.joined(state)), usedforsecurity=False).digest()
        state.set(self.target, str(int.from_bytes(digest[8:], "big") % self.modulus))
        return True


class _LabelMap(_Rule):
    """labelmap: copy each label whose name matches to the name made by replacing the match."""

    __slots__ = ("_mapped", "regex", "replacement")

    def __init__(self, spec: RelabelRuleSpec, regex: AnchoredRegex) -> None:
        super().__init__(spec)
        self.regex = regex
        self.replacement = compile_template(spec.replacement, regex.group_names)
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
        data = go_bytes(name)
        span = self.regex.find(data)
        new_name = None if span is None else go_string(self.regex.replace_all(data, span, self.replacement))
        if len(name) <= MEMO_TEXT_LIMIT:
            if len(self._mapped) >= MEMO_SIZE:
                self._mapped.clear()
            self._mapped[name] = new_name
        return new_name


class _LabelFilter(_Rule):
    """labeldrop and labelkeep: remove the labels whose names match (labeldrop) or do not (labelkeep)."""

    __slots__ = ("drop_on_match", "regex")

    def __init__(self, spec: RelabelRuleSpec, regex: AnchoredRegex, *, drop_on_match: bool) -> None:
        super().__init__(spec)
        self.regex = regex
        self.drop_on_match = drop_on_match

    def apply(self, state: _LabelState) -> bool:
        for name in list(state.labels):
            if self.regex.matches(name) == self.drop_on_match:
                state.delete(name)
        return True


# --- validation --------------------------------------------------------------------------------------


def _check(spec: RelabelRuleSpec) -> tuple[list[Problem], AnchoredRegex | None]:
    """Every reason Prometheus would refuse `spec` (it stops at the first), and the compiled regex."""
    problems: list[Problem] = []

    def problem(field: str, message: str) -> None:
        where = f"{spec.location}.{field}" if field else spec.location
        problems.append(Problem(where, message, spec.line_of(field)))

    action = go_lower(spec.action)
    choices = ", ".join(ACTIONS)
    if not spec.action:
        problem("action", f"is empty; use one of {choices}")
    elif action not in ACTIONS:
        problem("action", f"unknown relabel action {spec.action!r}; use one of {choices}")
    for index, name in enumerate(spec.source_labels):
        if not name:
            problem(f"source_labels[{index}]", "a label name must not be empty")
    regex: AnchoredRegex | None = None
    try:
        regex = AnchoredRegex(spec.regex)
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


def _build(spec: RelabelRuleSpec, regex: AnchoredRegex) -> _Rule:  # noqa: PLR0911 - one return per action
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


class FilterStep(NamedTuple):
    """A keep, drop, keepequal or dropequal rule as data, for an engine that joins source values itself.

    The series is kept when `matches(joined)` (or, without `matches`, the value of `target` equalling the
    joined source values) is `keep_when`.
    """

    source_labels: tuple[str, ...]
    separator: str
    keep_when: bool
    matches: Callable[[str], bool] | None
    target: str


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

    def filter_steps(self) -> tuple[FilterStep, ...] | None:
        """The rules as FilterSteps when each one only keeps or drops series (none writes a label)."""
        steps = []
        for rule in self._rules:
            if isinstance(rule, _Filter):
                steps.append(
                    FilterStep(rule.source_labels, rule.separator, rule.keep_on_match, rule.regex.matches, "")
                )
            elif isinstance(rule, _Equal):
                steps.append(
                    FilterStep(rule.source_labels, rule.separator, rule.keep_on_equal, None, rule.target)
                )
            else:
                return None
        return tuple(steps)

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
