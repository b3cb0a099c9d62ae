"""A body's way through the relay: lines → series → relabel → canonical text, with limits and counts (pure).

Each series text (`name{labels}` as it arrived) is parsed and relabeled once and the result kept in a
bounded memo that lives across scrapes, as Prometheus' scrape cache does: in steady state a sample line
costs a few dictionary look-ups. Values and timestamps pass through as the bytes they arrived as.

Output rules, so that the strictest parser accepts it: series in canonical form (no blanks, no empty label
values, the input's label order), one space before the value; HELP/TYPE just before the first surviving
sample of their family, never twice, and never after samples of the same name; no comments or blank lines.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from relay.config import UpstreamConfig
from relay.errors import InvalidExpositionError, LimitExceededError
from relay.exposition import (
    EOF_LINE,
    LineBlocks,
    ParsedSeries,
    belongs_to_family,
    check_exemplar,
    legacy_names,
    metadata_line,
    parse_metadata,
    parse_openmetrics_metadata,
    parse_series,
    serialize_series,
    serialize_utf8_series,
    split_openmetrics_tail,
    split_tail,
)
from relay.relabel import RelabelProgram

DROP_REASONS = ("relabel", "invalid_name", "utf8_name", "duplicate", "invalid_line")
"""Why a sample is left out of a relayed body: dropped by a rule; no valid metric name after relabeling;
a UTF-8 name the text format 0.0.4 cannot carry; a series already sent in this body; an invalid line
(only with `on_invalid_line: drop`)."""

_LABEL_ONLY_ACTIONS = frozenset({"keep", "drop", "keepequal", "dropequal"})
_EXEMPLAR_SUFFIXES = ("_total", "_bucket")
_OPENMETRICS_LABEL_SET = re.compile(rb'[^{ ]*\{(?:[^"}]|"(?:\\.|[^\\"])*")*\}')
MEMO_BYTE_LIMIT = 64 << 20
"""The series memo's text, whatever relabel_cache_size says: long series cannot make it grow past this."""
DUPLICATE_WATCH_LIMIT = 400_000
"""Distinct series of one body checked for duplicates (about 25 MB, more than the biggest kube-apiserver);
past it, repeats go through unchecked (a Prometheus downstream still keeps only the first), so that memory
stays bounded for any body."""


class SeriesResult(NamedTuple):  # a NamedTuple: built once per new series, so it must be cheap to make
    """What one series text becomes: its output text (None if dropped) and what later checks need."""

    output: bytes | None
    name: str
    renamed: bool
    unchanged: bool = False  # the output is the series text as it came: the line can go out as it is
    drop_reason: str = ""
    limit_error: str = ""
    identity: int = 0  # equal for equal label sets, whatever their order: finds duplicates
    utf8_output: bytes | None = None  # for scrapers that accept quoted UTF-8 names


@dataclass(frozen=True, slots=True)
class Limits:
    """The per-scrape limits, Prometheus' and the relay's own line limit; 0 means none."""

    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    line_length_limit: int = 0  # not Prometheus': the longest line the relay reads (bounds its memory)

    def violation(self, labels: dict[str, str]) -> str:
        """Which label limit the (relabeled) series breaks, or ''."""
        if not (self.label_limit or self.label_name_length_limit or self.label_value_length_limit):
            return ""
        if self.label_limit and len(labels) > self.label_limit:
            return f"a series has {len(labels)} labels, more than label_limit ({self.label_limit})"
        # Prometheus measures names and values in bytes.
        for label, value in labels.items():
            if self.label_name_length_limit and len(label.encode()) > self.label_name_length_limit:
                return f"label name {label[:40]!r}… is longer than label_name_length_limit"
            if self.label_value_length_limit and len(value.encode()) > self.label_value_length_limit:
                return f"the value of label {label!r} is longer than label_value_length_limit"
        return ""


@dataclass(eq=False)  # identity: a reload that changes an upstream makes new Rules, never equal to the old
class Rules:
    """One upstream's relabeling: compiled program, limits, and the memo shared by its scrapes."""

    upstream: UpstreamConfig
    program: RelabelProgram
    limits: Limits = field(default_factory=Limits)
    drop_invalid_lines: bool = False
    memo_size: int = 100_000
    rewrites_labels: bool = False
    series: dict[bytes, SeriesResult] = field(default_factory=dict)
    memo_bytes: int = 0
    misses: int = 0  # series texts that had to be parsed and relabeled, over all scrapes
    tails: dict[bytes, bytes | bool] = field(default_factory=dict)  # True: already canonical
    openmetrics_tails: dict[bytes, bytes | bool] = field(default_factory=dict)

    @classmethod
    def for_upstream(cls, upstream: UpstreamConfig) -> Rules:
        """Compile an upstream's metric_relabel_configs and limits; ConfigError naming each bad rule."""
        specs = upstream.metric_relabel_configs
        limits = Limits(
            sample_limit=upstream.sample_limit,
            label_limit=upstream.label_limit,
            label_name_length_limit=upstream.label_name_length_limit,
            label_value_length_limit=upstream.label_value_length_limit,
            line_length_limit=upstream.line_length_limit,
        )
        return cls(
            upstream=upstream,
            program=RelabelProgram.compile(specs),
            limits=limits,
            drop_invalid_lines=upstream.on_invalid_line == "drop",
            memo_size=upstream.relabel_cache_size,
            # keep/drop rules only remove series; any other action can make two series one.
            rewrites_labels=any(spec.action.lower() not in _LABEL_ONLY_ACTIONS for spec in specs),
        )

    def learn_series(self, series: bytes) -> SeriesResult:
        """Parse and relabel a series text not seen before, and remember the result."""
        try:
            parsed = parse_series(series)
        except InvalidExpositionError:
            if not self.drop_invalid_lines:
                raise
            result = SeriesResult(None, "", renamed=False, drop_reason="invalid_line")
        else:
            result = self._relabel(series, parsed)
        self.misses += 1
        size = len(series) + (0 if result.unchanged else len(result.output or b""))
        # A full memo keeps what it has: clearing it would leave a body bigger than the memo with no hit
        # at all, scrape after scrape. end_of_scrape() renews it when the series have moved on.
        if len(self.series) < self.memo_size and self.memo_bytes + size <= MEMO_BYTE_LIMIT:
            self.series[series] = result
            self.memo_bytes += size
        return result

    @property
    def memo_full(self) -> bool:
        """Whether the memo takes no more series (by count, or nearly by bytes)."""
        return len(self.series) >= self.memo_size or self.memo_bytes >= MEMO_BYTE_LIMIT - (64 << 10)

    def end_of_scrape(self, samples: int, misses: int, *, was_full: bool) -> None:
        """After a body: forget a full memo of which this body used less than half.

        Its series have moved on (pods come and go): the next scrape fills it anew.
        """
        hits = samples - misses
        if was_full and hits * 2 < len(self.series):
            self.series.clear()
            self.memo_bytes = 0

    def _relabel(self, series: bytes, parsed: ParsedSeries) -> SeriesResult:
        name, labels = parsed.name, parsed.labels
        relabeled = labels if self.program.is_empty else self.program.apply(labels)
        if relabeled is None:
            return SeriesResult(None, name, renamed=False, drop_reason="relabel")
        if relabeled is labels or relabeled == labels:
            relabeled = labels  # same label set: keep the input's label order, and so its text
            if parsed.canonical and not parsed.dropped_empty:  # the common case: the text goes out as it is
                return SeriesResult(
                    series,
                    name,
                    renamed=False,
                    limit_error=self.limits.violation(labels),
                    identity=self._identity(labels),
                )
        new_name = relabeled.get("__name__", "")
        if not new_name:
            return SeriesResult(None, name, renamed=True, drop_reason="invalid_name")
        if not legacy_names(relabeled):
            if relabeled is not labels and legacy_names(labels):  # a rule made a name invalid
                return SeriesResult(None, new_name, renamed=new_name != name, drop_reason="invalid_name")
            return SeriesResult(
                None,
                new_name,
                renamed=new_name != name,
                drop_reason="utf8_name",
                limit_error=self.limits.violation(relabeled),
                identity=self._identity(relabeled),
                utf8_output=serialize_utf8_series(relabeled),
            )
        canonical = serialize_series(relabeled)
        unchanged = canonical == series and not parsed.dropped_empty
        return SeriesResult(
            output=series if unchanged else canonical,
            name=new_name,
            renamed=new_name != name,
            unchanged=unchanged,
            limit_error=self.limits.violation(relabeled),
            identity=self._identity(relabeled),
        )

    def _identity(self, labels: dict[str, str]) -> int:
        # Only rules that rewrite labels can make duplicates; the others need no identity.
        return hash(frozenset(labels.items())) if self.rewrites_labels else 0

    def learn_tail(self, tail: bytes, *, openmetrics: bool) -> bytes | bool | None:
        """What follows a series: True when already canonical (` value[ timestamp]`), else its canonical
        form; None if invalid and dropped."""
        try:
            value, timestamp = split_openmetrics_tail(tail) if openmetrics else split_tail(tail)
        except InvalidExpositionError:
            if not self.drop_invalid_lines:
                raise
            return None
        canonical = b" " + value + (b" " + timestamp if timestamp is not None else b"")
        learned: bytes | bool = True if canonical == tail else canonical
        memo = self.openmetrics_tails if openmetrics else self.tails
        if len(memo) >= self.memo_size:
            memo.clear()
        memo[tail] = learned
        return learned


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
        if self._verbatim and len(out) == len(lines) and not openmetrics:
            return self._blocks.last_block + b"\n"
        out.append(b"")
        return b"\n".join(out)

    def _comment(self, line: bytes) -> None:
        """Remember HELP/TYPE (and UNIT) until a sample of their family survives; other comments go."""
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
        if written != line:
            self._verbatim = False
        if (
            written is not None
            and metadata.family not in self._families_described
            and (written not in self._pending_metadata)
        ):
            self._pending_metadata.append(written)

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
