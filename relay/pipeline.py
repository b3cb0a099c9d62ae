"""A body's way through the relay: lines → series → relabel → canonical text, metadata, limits, counts (pure).

Series results come from the upstream's Rules (rules.py), learnt once and remembered, so that in steady
state a sample line costs a few dictionary look-ups. Values and timestamps pass through as the bytes they
arrived as.

Output rules, so that the strictest parser accepts it: series in canonical form (no blanks, no empty label
values, the input's label order), one space before the value; HELP/TYPE just before the first surviving
sample of their family, never twice, and never after samples of the same name; no comments or blank lines.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from relay.errors import InvalidExpositionError, LimitExceededError
from relay.exposition import (
    EOF_LINE,
    LineBlocks,
    belongs_to_family,
    check_exemplar,
    metadata_line,
    parse_metadata,
    parse_openmetrics_metadata,
)
from relay.rules import Rules, SeriesResult

_EXEMPLAR_SUFFIXES = ("_total", "_bucket")
_OPENMETRICS_LABEL_SET = re.compile(rb'[^{ ]*\{(?:[^"}]|"(?:\\.|[^\\"])*")*\}')
DUPLICATE_WATCH_LIMIT = 400_000
"""Distinct series of one body checked for duplicates (about 25 MB, more than the biggest kube-apiserver);
past it, repeats go through unchecked (a Prometheus downstream still keeps only the first), so that memory
stays bounded for any body."""


@dataclass
class BodyRelabeler:
    """Turns one upstream body, chunk by chunk, into the relayed body; counts what it did.

    `openmetrics`: the body is OpenMetrics 1.0 (and so is the output: exemplars kept, `# EOF` required and
    re-sent at the end); otherwise the text format 0.0.4. `utf8_names`: the scraper accepts quoted UTF-8
    names (text format only); otherwise series with such names are dropped and counted.
    """

    rules: Rules
    openmetrics: bool = False
    utf8_names: bool = False
    samples_in: int = 0
    samples_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    _blocks: LineBlocks = field(init=False)
    _family: str = ""
    _family_type: bytes = b""
    _pending_metadata: list[bytes] = field(default_factory=list)
    _families_described: set[str] = field(default_factory=set)
    _names_sent: set[str] = field(default_factory=set)
    _last_name: str = ""
    _seen: set[int] = field(default_factory=set)
    _ended: bool = False
    _verbatim: bool = False
    _verbatim_before_comment: bool = False

    def __post_init__(self) -> None:
        self._blocks = LineBlocks(self.rules.limits.line_length_limit)
        self._misses_before = self.rules.misses
        self._memo_was_full = self.rules.memo_full

    @property
    def memo_misses(self) -> int:
        """Series of this body that were not in the memo (other bodies relabeled meanwhile count too)."""
        return self.rules.misses - self._misses_before

    def feed(self, chunk: bytes) -> bytes:
        """The relayed bytes for the lines that `chunk` completes (often b'' while a line is incomplete)."""
        return self._lines(self._blocks.feed(chunk))

    def finish(self) -> bytes:
        """The relayed bytes for a last line without newline, and OpenMetrics' `# EOF`."""
        relayed = self._lines(self._blocks.finish())
        self.rules.end_of_scrape(self.samples_in, self.memo_misses, was_full=self._memo_was_full)
        if not self.openmetrics:
            return relayed
        if not self._ended:
            # OpenMetrics' end marker is what tells a complete body from a truncated one.
            raise InvalidExpositionError("invalid exposition: the OpenMetrics body ended without # EOF")
        return relayed + EOF_LINE + b"\n"

    def _lines(self, lines: list[bytes]) -> bytes:  # noqa: PLR0912, PLR0915 - the hot loop is one frame
        # Everything the loop touches is a local: attribute look-ups cost as much as the work per line.
        out: list[bytes] = []
        append = out.append
        rules = self.rules
        series_memo_get = rules.series.get
        learn_series = rules.learn_series
        openmetrics = self.openmetrics
        tails_memo_get = (rules.openmetrics_tails if openmetrics else rules.tails).get
        learn_tail = rules.learn_tail
        sample_limit = rules.limits.sample_limit
        dedup = rules.rewrites_labels
        seen = self._seen
        last_name = self._last_name
        samples_in = samples_out = 0
        # While every line goes out as it came, in order, the block itself is the output (no join).
        self._verbatim = True
        try:
            for raw in lines:
                line = raw
                if openmetrics and (self._ended or not line or line[0] in (32, 9)):
                    raise _openmetrics_error(line, self._ended)
                if not line:
                    self._verbatim = False
                    continue
                if line[0] < 58:  # not a name's first character nor '{': blanks, a comment, or invalid
                    line = line.lstrip(b" \t")
                    if line is not raw:
                        self._verbatim = False
                    if not line:
                        continue
                    if line[0] == 35:  # '#'
                        self._verbatim_before_comment = self._verbatim
                        self._comment(line)
                        last_name = ""
                        continue
                exemplar = b""
                if openmetrics:
                    line, exemplar = _split_exemplar(line)
                end = line.rfind(b"}")
                if end < 0:
                    end = _end_of_bare_name(line)
                series = line[: end + 1]
                tail = line[end + 1 :]
                result = series_memo_get(series) or learn_series(series)
                new_tail = tails_memo_get(tail) or learn_tail(tail, openmetrics=openmetrics)
                samples_in += 1
                output, name, _, unchanged, drop_reason, limit_error, identity, utf8_output = result
                if output is None:
                    output = utf8_output if self.utf8_names else None
                    if output is None:
                        self.dropped[drop_reason] += 1
                        self._verbatim = False
                        continue
                if new_tail is None:
                    self.dropped["invalid_line"] += 1
                    self._verbatim = False
                    continue
                if limit_error:
                    raise LimitExceededError(limit_error)
                if name != last_name:  # families run in blocks: check once per name change
                    last_name = name
                    self._describe(result, append)
                if dedup:
                    if identity in seen:
                        self.dropped["duplicate"] += 1
                        self._verbatim = False
                        continue
                    if len(seen) < DUPLICATE_WATCH_LIMIT:
                        seen.add(identity)
                samples_out += 1
                if exemplar and result.renamed and not name.endswith(_EXEMPLAR_SUFFIXES):
                    exemplar = b""  # OpenMetrics allows exemplars on counters and buckets only
                if unchanged and new_tail is True:
                    append(line if not exemplar else line + exemplar)
                else:
                    self._verbatim = False
                    append(output + (tail if new_tail is True else cast(bytes, new_tail)) + exemplar)
                if sample_limit and self.samples_out + samples_out > sample_limit:
                    raise LimitExceededError(f"more samples than sample_limit ({sample_limit})")
        finally:
            self.samples_in += samples_in
            self.samples_out += samples_out
            self._last_name = last_name
        if not out:
            return b""
        # `out == lines` compares mostly identical objects; the flag only spares the comparison.
        if self._verbatim and not openmetrics and out == lines:
            return self._blocks.last_block + b"\n"
        out.append(b"")
        return b"\n".join(out)

    def _comment(self, line: bytes) -> None:
        """Remember HELP/TYPE (and UNIT) until a sample of their family survives; other comments go.

        Only a metadata line kept as it came leaves the block verbatim: anything else makes the output
        differ from the input, so the block must be joined line by line.
        """
        self._verbatim = False
        metadata = parse_openmetrics_metadata(line) if self.openmetrics else parse_metadata(line)
        if metadata is None:
            return
        if metadata.kind == b"EOF":
            self._ended = True
            return
        if metadata.family != self._family:
            self._family = metadata.family
            self._family_type = b""
            self._pending_metadata = []
        if metadata.kind == b"TYPE":
            self._family_type = metadata.text
        if self.openmetrics:
            written: bytes | None = line  # OpenMetrics metadata is strict already
        else:
            written = metadata_line(metadata, utf8_names=self.utf8_names)
        if (
            written is not None
            and metadata.family not in self._families_described
            and (written not in self._pending_metadata)
        ):
            self._pending_metadata.append(written)
            self._verbatim = written == line and self._verbatim_before_comment

    def _describe(self, result: SeriesResult, append: Callable[[bytes], None]) -> None:
        """Send the pending metadata before the first sample of their family; note every name sent.

        Strict parsers refuse a TYPE for a name after samples of that name, which renamed series would
        otherwise cause: a family whose name was already sent loses its metadata instead.
        """
        family = self._family
        if self._pending_metadata and family and belongs_to_family(result.name, family, self._family_type):
            if family not in self._families_described and family not in self._names_sent:
                for pending in self._pending_metadata:
                    append(pending)
            self._families_described.add(family)
            self._pending_metadata = []
        self._names_sent.add(result.name)


def _split_exemplar(line: bytes) -> tuple[bytes, bytes]:
    """An OpenMetrics sample line without its exemplar (` # {…} value[ ts]`), and the exemplar, checked."""
    mark = line.find(b" # ")
    if mark < 0:
        return line, b""
    labels = _OPENMETRICS_LABEL_SET.match(line)
    if labels is not None and labels.end() > mark:  # the ` # ` was inside a quoted label value
        mark = line.find(b" # ", labels.end())
        if mark < 0:
            return line, b""
    exemplar = line[mark:]
    check_exemplar(exemplar)
    return line[:mark], exemplar


def _openmetrics_error(line: bytes, ended: bool) -> InvalidExpositionError:
    problem = "content after # EOF" if ended else "blank lines and leading blanks are not OpenMetrics"
    return InvalidExpositionError(f"invalid exposition: {problem}: {line[:80]!r}")


def _end_of_bare_name(line: bytes) -> int:
    """Index of the last byte of the metric name of a line without braces (the name ends at a blank)."""
    space = line.find(b" ")
    tab = line.find(b"\t")
    if tab >= 0 and (space < 0 or tab < space):
        space = tab
    return (space if space >= 0 else len(line)) - 1
