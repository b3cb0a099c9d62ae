"""The Python line engine: the executable specification of a body's way through the relay (pure).

lines → series → relabel → canonical text, with metadata placement, limits and counts. Series results come
from the upstream's Rules (rules.py), learnt once and remembered, so that in steady state a sample line costs
a few dictionary look-ups. Values and timestamps pass through as the bytes they arrived as. The compiled
engine (`_engine.pyx`) does the same work in C and must give the same bytes, counts and errors. An error about
one line names where it is (line number, byte offset, family, excerpt: exposition.located), from where
LineBlocks says the block starts and the line's index in it, worked out only once there is an error.

Output rules, so that the strictest parser accepts it: series as they came when no rule changed them,
otherwise in canonical form (no blanks, no empty label values, the input's label order), one space before the
value; metadata as MetadataTracker places it; no comments or blank lines.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Iterator
from typing import cast

from relay.errors import InvalidExpositionError, LimitExceededError
from relay.exposition import (
    EOF_LINE,
    EXCERPT_SOURCE,
    LINE_ERRORS,
    LineBlocks,
    check_exemplar,
    invalid_line,
    label_limit_error,
    line_too_long,
    located,
    opens_quote,
)
from relay.metadata import MetadataTracker
from relay.rules import INVALID_LINE, Rules

EXEMPLAR_SUFFIXES = ("_total", "_bucket")
_EXEMPLAR_SUFFIXES_BYTES = tuple(suffix.encode() for suffix in EXEMPLAR_SUFFIXES)
_SAMPLE_NAME = re.compile(rb'([a-zA-Z_:][a-zA-Z0-9_:]*)|\{"((?:\\.|[^\\"])*)"')
_OPENMETRICS_LABEL_SET = re.compile(rb'[^{ ]*\{(?:[^"}]|"(?:\\.|[^\\"])*")*\}')
DUPLICATE_WATCH_LIMIT = 400_000
"""Distinct series of one body checked for duplicates (about 25 MB, more than the biggest kube-apiserver);
past it, repeats go through unchecked (a Prometheus downstream still keeps only the first), so that memory
stays bounded for any body."""


class PythonBodyRelabeler:
    """Turns one upstream body, chunk by chunk, into the relayed body; counts what it did.

    `openmetrics`: the body is OpenMetrics 1.0 (and so is the output: exemplars kept, `# EOF` required and
    re-sent at the end); otherwise the text format 0.0.4. `utf8_names`: the scraper accepts quoted UTF-8
    names (text format only); otherwise series with such names are dropped and counted.
    """

    engine = "python"
    releases_gil = False  # no point in a worker thread: the loop would wait for the GIL

    def __init__(self, rules: Rules, *, openmetrics: bool = False, utf8_names: bool = False) -> None:
        self.rules = rules
        self.openmetrics = openmetrics
        self.utf8_names = utf8_names
        self.samples_in = 0
        self.samples_out = 0
        self.dropped: Counter[str] = Counter()
        self._metadata = MetadataTracker(openmetrics=openmetrics, utf8_names=utf8_names)
        self._blocks = LineBlocks(rules.limits.line_length_limit)
        self._last_name = ""
        self._seen: set[int] = set()
        self._verbatim = False
        self._misses_before = rules.misses
        self._memo_was_full = rules.memo_full

    @property
    def memo_misses(self) -> int:
        """Series of this body that were not in the memo (other bodies relabeled meanwhile count too)."""
        return self.rules.misses - self._misses_before

    def feed(self, chunk: bytes) -> bytes:
        """The relayed bytes for the lines that `chunk` completes (often b'' while a line is incomplete)."""
        return self._lines(self._blocks.feed(chunk))

    def feed_many(self, chunks: list[bytes]) -> bytes:
        """The relayed bytes for the lines that these chunks complete."""
        return b"".join([self.feed(chunk) for chunk in chunks])

    def finish(self) -> bytes:
        """The relayed bytes for a last line without newline, and OpenMetrics' `# EOF`."""
        relayed = self._lines(self._blocks.finish(), final=True)
        self.rules.end_of_scrape(self.samples_in, self.memo_misses, was_full=self._memo_was_full)
        if not self.openmetrics:
            return relayed
        if not self._metadata.ended:
            raise missing_eof()
        return relayed + EOF_LINE + b"\n"

    def _lines(  # noqa: PLR0912, PLR0915 - the hot loop is one frame
        self, lines: list[bytes], *, final: bool = False, continued: bool = False
    ) -> bytes:
        # Everything the loop touches is a local: attribute look-ups cost as much as the work per line.
        out: list[bytes] = []
        append = out.append
        extend = out.extend
        rules = self.rules
        series_memo_get = rules.series.get
        learn_series = rules.learn_series
        openmetrics = self.openmetrics
        tails_memo_get = (rules.openmetrics_tails if openmetrics else rules.tails).get
        learn_tail = rules.learn_tail
        sample_limit = rules.limits.sample_limit
        dedup = rules.rewrites_labels
        metadata = self._metadata
        seen = self._seen
        last_name = self._last_name
        samples_in = samples_out = 0
        # While every line goes out as it came, in order, the block itself is the output (no join).
        verbatim = True
        remaining = iter(lines)
        sample_start = -1  # the index of a sample's first line while the lines it spans are joined
        try:
            for raw in remaining:
                line = raw
                if openmetrics and (metadata.ended or not line or line[0] in (32, 9)):
                    raise openmetrics_line_error(line, ended=metadata.ended)
                if not line:
                    verbatim = False
                    continue
                if line[0] < 58:  # not a name's first character nor '{': blanks, a comment, or invalid
                    line = line.lstrip(b" \t")
                    if line is not raw:
                        verbatim = False
                    if not line:
                        continue
                    if line[0] == 35:  # '#'
                        verbatim = metadata.comment(line) and verbatim
                        last_name = ""
                        continue
                exemplar = b""
                if openmetrics:
                    line, exemplar = split_exemplar(line)
                end = line.rfind(b"}")
                if end < 0:
                    end = _end_of_bare_name(line)
                series = line[: end + 1]
                tail = line[end + 1 :]
                try:
                    result = series_memo_get(series) or learn_series(series)
                except InvalidExpositionError:
                    if continued or openmetrics or not opens_quote(line):
                        raise
                    result = INVALID_LINE
                if result is INVALID_LINE and not (continued or openmetrics) and opens_quote(line):
                    # A raw newline inside a quoted label value (Prometheus' lexer takes it): the sample goes
                    # on in the next lines; relabel it whole, or carry it to the next chunk.
                    sample_start = len(lines) - operator.length_hint(remaining) - 1
                    joined, complete = self._continued(line, remaining)
                    if not complete and not final:
                        self._blocks.push_back(b"\n".join(lines[sample_start:]))
                        break
                    self.samples_in += samples_in
                    self.samples_out += samples_out
                    samples_in = samples_out = 0
                    self._last_name = last_name
                    relayed = self._lines([joined], continued=True)
                    last_name = self._last_name
                    sample_start = -1
                    verbatim = False
                    if relayed:
                        append(relayed[:-1])
                    continue
                if openmetrics and not result.openmetrics_valid:
                    result = rules.openmetrics_refusal(series)
                new_tail = tails_memo_get(tail) or learn_tail(tail, openmetrics=openmetrics)
                samples_in += 1
                output, name, _, unchanged, drop_reason, limit_error, identity, utf8_output, _ = result
                if output is None:
                    output = utf8_output if self.utf8_names else None
                    if output is None:
                        self.dropped[drop_reason] += 1
                        verbatim = False
                        continue
                if new_tail is None:
                    self.dropped["invalid_line"] += 1
                    verbatim = False
                    continue
                if limit_error:
                    raise label_limit_error(limit_error)
                if name != last_name:  # families run in blocks: check once per name change
                    last_name = name
                    extend(metadata.describe(name))
                if dedup:
                    if identity in seen:
                        self.dropped["duplicate"] += 1
                        verbatim = False
                        continue
                    if len(seen) < DUPLICATE_WATCH_LIMIT:
                        seen.add(identity)
                samples_out += 1
                if exemplar and result.renamed and not name.endswith(EXEMPLAR_SUFFIXES):
                    exemplar = b""  # OpenMetrics allows exemplars on counters and buckets only
                if unchanged and new_tail is True:
                    append(line if not exemplar else line + exemplar)
                else:
                    verbatim = False
                    append(output + (tail if new_tail is True else cast(bytes, new_tail)) + exemplar)
                if sample_limit and self.samples_out + samples_out > sample_limit:
                    raise sample_limit_error(sample_limit)
        except LINE_ERRORS as error:
            if continued:  # the caller knows where the sample is
                raise
            # The line being read, or the lines of the sample being joined: the iterator has given them.
            end = len(lines) - operator.length_hint(remaining)
            start = sample_start if sample_start >= 0 else end - 1
            text = b"\n".join(lines[start:end])[:EXCERPT_SOURCE]
            blocks = self._blocks
            raise located(error, blocks.first_line + start, blocks.offset_of(lines, start), text) from error
        finally:
            self.samples_in += samples_in
            self.samples_out += samples_out
            self._last_name = last_name
        if not out:
            return b""
        # `out == lines` compares mostly identical objects; the flag only spares the comparison.
        if verbatim and not (openmetrics or continued) and out == lines:  # (a joined sample is no block)
            return self._blocks.last_block + b"\n"
        out.append(b"")
        return b"\n".join(out)

    def _continued(self, line: bytes, remaining: Iterator[bytes]) -> tuple[bytes, bool]:
        """`line` joined with the lines after it until its quoted value closes; False if the block ran out."""
        limit = self.rules.limits.line_length_limit
        joined = line
        while opens_quote(joined):
            following = next(remaining, None)
            if following is None:
                return joined, False
            joined += b"\n" + following
            if limit and len(joined) > limit:
                raise line_too_long(limit)
        return joined, True


def split_exemplar(line: bytes) -> tuple[bytes, bytes]:
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
    name = _SAMPLE_NAME.match(line)
    if name is not None and not (name[1] or name[2] or b"").endswith(_EXEMPLAR_SUFFIXES_BYTES):
        # OpenMetrics puts exemplars on counters' _total and histograms' _bucket samples only.
        raise invalid_line("exemplars are allowed only on _total and _bucket samples", exemplar)
    check_exemplar(exemplar)
    return line[:mark], exemplar


def openmetrics_line_error(line: bytes, *, ended: bool) -> InvalidExpositionError:
    """The error for a blank line, a leading blank or anything after `# EOF` in OpenMetrics."""
    problem = "content after # EOF" if ended else "blank lines and leading blanks are not OpenMetrics"
    return invalid_line(problem, line)


def missing_eof() -> InvalidExpositionError:
    """OpenMetrics' end marker is what tells a complete body from a truncated one."""
    return InvalidExpositionError("invalid exposition: the OpenMetrics body ended without # EOF")


def sample_limit_error(sample_limit: int) -> LimitExceededError:
    """The error for a body with more surviving samples than sample_limit."""
    return LimitExceededError(f"more samples than sample_limit ({sample_limit})")


def _end_of_bare_name(line: bytes) -> int:
    """Index of the last byte of the metric name of a line without braces (the name ends at a blank)."""
    space = line.find(b" ")
    tab = line.find(b"\t")
    if tab >= 0 and (space < 0 or tab < space):
        space = tab
    return (space if space >= 0 else len(line)) - 1
