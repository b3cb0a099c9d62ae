"""Reading a YAML node tree with located problems: each key's line, merge keys, did-you-mean (pure).

The configuration files' schemas (config.py, webconfig.py) subclass `NodeReader`; every problem it finds
names its path in the file (`upstreams[0].timeout`) and its line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import ClassVar, TypeVar

import yaml

from relay.errors import Problem
from relay.units import parse_duration, parse_size

T = TypeVar("T")


def in_line_order(problems: list[Problem]) -> list[Problem]:
    """Problems sorted by line, those of no line (the file as a whole) first; stable otherwise."""
    return sorted(problems, key=lambda problem: problem.line or 0)


# PyYAML's complaints, said in plain words: (start of its text, the explanation, whether the line is that of
# the construct being read rather than where reading stopped).
_YAML_EXPLANATIONS: tuple[tuple[str, str, bool], ...] = (
    (
        "could not find expected ':'",
        "this line is neither `key: value` nor a list item: probably a missing ':' or a missing space "
        "after it",
        True,
    ),
    (
        "mapping values are not allowed here",
        "a ':' where no key can start: probably this line is indented deeper than the key before it, or a "
        "value holds ': ' and needs quotes",
        False,
    ),
    (
        "expected <block end>",
        "wrong indentation: this line does not line up with the keys or list items before it",
        False,
    ),
    ("found character '\\t'", "a tab: YAML indents with spaces only", False),
    ("found undefined alias", "an alias (*name) needs an anchor (&name) defined before it", False),
    ("found unexpected end of stream", "a quote opened on this line is never closed", True),
)


def yaml_problem(exc: yaml.YAMLError) -> Problem:
    """PyYAML's error as a located problem, explained in plain words when it is a common mistake."""
    problem = str(getattr(exc, "problem", None) or exc)
    mark = getattr(exc, "problem_mark", None)
    for start, explanation, at_context in _YAML_EXPLANATIONS:
        if problem.startswith(start):
            context = getattr(exc, "context_mark", None)
            if at_context and context is not None:
                mark = context
            problem = f"{problem} ({explanation})"
            break
    return Problem("", f"invalid YAML: {problem}", mark.line + 1 if mark is not None else None)


def _camel_to_snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


class NodeReader:
    """Walks a YAML node tree so that every problem can name its path and line; subclasses add a schema."""

    foreign_keys: ClassVar[Mapping[str, tuple[str, str]]] = {}
    """Keys people bring from elsewhere: what to write instead (when the section knows it), and why."""
    camel_case_hint: ClassVar[str] = "this file uses snake_case names"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self._key_lines: dict[int, dict[str, int]] = {}  # id of a mapping node: the lines of its keys
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, node: yaml.Node | None, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, self.line(node)))

    @staticmethod
    def line(node: yaml.Node | None) -> int | None:
        return node.start_mark.line + 1 if node is not None else None

    def lines(self, node: yaml.Node) -> dict[str, int]:
        """The line of each key `mapping` read from `node` (a merged key's where it is written), and ''
        for the node itself."""
        return {**self._key_lines.get(id(node), {}), "": node.start_mark.line + 1}

    def key_line(self, node: yaml.Node, key: str) -> int | None:
        """The line of one key `mapping` read from `node`."""
        return self._key_lines.get(id(node), {}).get(key)

    def unknown_key(self, key_node: yaml.Node, where: str, key: str, known: set[str]) -> None:
        """Report a key the section does not take; a schema may say more about some keys."""
        self.problem(key_node, where, self.unknown_key_message(key, known))

    def unknown_key_message(self, key: str, known: set[str]) -> str:
        """Why `key` is not taken: a suggestion (a hint for names from elsewhere), else the known keys."""
        if key in self.foreign_keys and self.foreign_keys[key][0] in known:
            suggestion, hint = self.foreign_keys[key]
            return f"unknown key; did you mean {suggestion}? ({hint})"
        snake = _camel_to_snake(key)
        if snake != key and snake in known:
            return f"unknown key; did you mean {snake}? ({self.camel_case_hint})"
        close = difflib.get_close_matches(key, sorted(known), n=1)
        if close:
            return f"unknown key; did you mean {close[0]}?"
        return f"unknown key (known keys: {', '.join(sorted(known))})"

    # --- collections and scalars --------------------------------------------------------------------

    def mapping(
        self,
        node: yaml.Node,
        path: str,
        known: set[str] | None,
        required: frozenset[str] | set[str] = frozenset(),
    ) -> dict[str, yaml.Node]:
        """The keys of a mapping node (merge keys applied); unknown, duplicate and missing required keys
        are problems."""
        if not isinstance(node, yaml.MappingNode):
            if not self.is_null(node):
                self.problem(node, path, f"must be a mapping, not {self.kind(node)}")
            elif required:
                self.problem(node, path, f"is empty; needs {', '.join(sorted(required))}")
            return {}
        found: dict[str, yaml.Node] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node, merged in self.pairs(node, path):
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            where = f"{path}.{key}" if path else str(key)
            if key is None:
                self.problem(key_node, path, "keys must be strings")
            elif key in found:
                if not merged:  # an explicit key overrides a merged one, as in go-yaml
                    self.problem(key_node, where, "duplicate key")
            elif known is not None and key not in known:
                self.unknown_key(key_node, where, key, known)
            else:
                found[key] = value_node
                key_lines[key] = key_node.start_mark.line + 1
        self._key_lines[id(node)] = key_lines
        for key in sorted(required - found.keys()):
            self.problem(node, f"{path}.{key}" if path else key, "is required")
        return found

    def pairs(
        self, node: yaml.MappingNode, path: str, within: frozenset[int] = frozenset()
    ) -> Iterator[tuple[yaml.Node, yaml.Node, bool]]:
        """The mapping's own key/value pairs, then those its merge keys (`<<: *a`, `<<: [*a, *b]`) bring
        in (the first merged mapping wins, as in go-yaml), each marked whether it came by a merge.
        `within`: the mappings whose merges led here, which a merge must not bring in again."""
        within = within | {id(node)}
        where = f"{path}.<<" if path else "<<"
        merges: list[yaml.MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                yield key_node, value_node, False
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.problem(source, where, "a merge needs a mapping or a list of mappings (*anchors)")
                elif id(source) in within:
                    self.problem(
                        key_node, where, "a mapping cannot merge itself (its anchor is around the merge)"
                    )
                else:
                    merges.append(source)
        for source in merges:
            for key_node, value_node, _ in self.pairs(source, path, within):
                yield key_node, value_node, True

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if not self.is_null(node):
            self.problem(node, path, f"must be a list, not {self.kind(node)}")
        return []

    def string_list(self, node: yaml.Node, path: str) -> Iterator[str]:
        for index, item in enumerate(self.sequence(node, path)):
            value = self.string(item, f"{path}[{index}]", empty_ok=True)
            if value is not None:
                yield value

    def string(self, node: yaml.Node, path: str, *, empty_ok: bool = False) -> str | None:
        # Like Prometheus (go-yaml), a scalar given for a string field is taken as its text: `regex: 1`.
        if not isinstance(node, yaml.ScalarNode) or (self.is_null(node) and not empty_ok):
            self.problem(node, path, f"must be a string, not {self.kind(node)}")
            return None
        if self.is_null(node):
            return ""
        if not node.value and not empty_ok:
            self.problem(node, path, "must not be empty")
            return None
        return str(node.value)

    def path(self, node: yaml.Node, path: str) -> Path | None:
        text = self.string(node, path)
        return self.base_dir / text if text is not None else None

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        return self.typed(node, path, bool, "true or false")

    def count(self, node: yaml.Node, path: str) -> int | None:
        value = self.typed(node, path, int, "a whole number")
        if value is not None and value < 0:
            self.problem(node, path, "must not be negative")
            return None
        return value

    def duration(self, node: yaml.Node, path: str) -> float | None:
        return self.parsed(node, path, parse_duration)

    def size(self, node: yaml.Node, path: str) -> int | None:
        return self.parsed(node, path, parse_size)

    def parsed(self, node: yaml.Node, path: str, parser: Callable[[str], T]) -> T | None:
        text = self.string(node, path)
        if text is None:
            return None
        try:
            return parser(text)
        except ValueError as exc:
            self.problem(node, path, str(exc))
            return None

    def typed(self, node: yaml.Node, path: str, kind: type[T], wanted: str) -> T | None:
        value = self._constructor.construct_object(node) if isinstance(node, yaml.ScalarNode) else None
        # bool is an int in Python; a YAML `true` is no count.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(node, path, f"must be {wanted}, not {self.kind(node)}")
            return None
        return value

    @staticmethod
    def is_null(node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    @staticmethod
    def kind(node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if node.tag == "tag:yaml.org,2002:null":
            return "empty"
        return f"{node.tag.rsplit(':', 1)[-1]} {node.value!r}"
