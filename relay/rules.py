"""One upstream's compiled relabeling and its memo: what each series text becomes, learnt once (pure).

Each series text (`name{labels}` as it arrived) is parsed and relabeled once and the result kept in a
bounded memo that lives across scrapes, as Prometheus' scrape cache does; so is the canonical form of
what follows a series (value and timestamp).
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field
from typing import NamedTuple

from relay.config import DEFAULT_RELABEL_CACHE_SIZE, UpstreamConfig
from relay.errors import InvalidExpositionError
from relay.exposition import (
    ParsedSeries,
    is_openmetrics_series,
    legacy_names,
    openmetrics_series_error,
    parse_series,
    serialize_series,
    serialize_utf8_series,
    split_openmetrics_tail,
    split_tail,
)
from relay.relabel import FilterStep, RelabelProgram

DROP_REASONS = ("relabel", "invalid_name", "utf8_name", "duplicate", "invalid_line")
"""Why a sample is left out of a relayed body: dropped by a rule; no valid metric name after relabeling;
a UTF-8 name the text format 0.0.4 cannot carry; a series already sent in this body; an invalid line
(only with `on_invalid_line: drop`)."""

_LABEL_ONLY_ACTIONS = frozenset({"keep", "drop", "keepequal", "dropequal"})
_TAIL_MEMO_LIMIT = 64
MEMO_BYTE_LIMIT = 64 << 20
"""The series memo's text, whatever relabel_cache_size says: long series cannot make it grow past this."""


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
    openmetrics_valid: bool = (
        True  # the text is also in OpenMetrics' stricter form (no blanks, no stray comma)
    )


INVALID_LINE = SeriesResult(None, "", renamed=False, drop_reason="invalid_line")
"""What an invalid series text becomes with `on_invalid_line: drop`."""


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
    memo_size: int = DEFAULT_RELABEL_CACHE_SIZE
    rewrites_labels: bool = False
    series: dict[bytes, SeriesResult] = field(default_factory=dict)
    memo_bytes: int = 0
    refused_insert: bool = False  # a series was not remembered for want of room
    misses: int = 0  # series texts that had to be parsed and relabeled, over all scrapes
    tails: dict[bytes, bytes | bool] = field(default_factory=dict)  # True: already canonical
    openmetrics_tails: dict[bytes, bytes | bool] = field(default_factory=dict)
    native_memo: object | None = None  # the compiled engine's memo, made by it on first use

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

    def relabel_series(self, series: bytes) -> SeriesResult:
        """What a series text becomes, parsed and relabeled (nothing remembered); raises if it is invalid
        (unless `on_invalid_line: drop`)."""
        try:
            parsed = parse_series(series)
        except InvalidExpositionError:
            if not self.drop_invalid_lines:
                raise
            return INVALID_LINE
        result = self._relabel(series, parsed)
        # One memo serves both formats: the entry says whether OpenMetrics bodies may carry the text.
        return result if is_openmetrics_series(series) else result._replace(openmetrics_valid=False)

    def openmetrics_refusal(self, series: bytes) -> SeriesResult:
        """For a series text the text format takes and OpenMetrics does not: raise, or with
        `on_invalid_line: drop` the result that drops the line."""
        if not self.drop_invalid_lines:
            raise openmetrics_series_error(series)
        return INVALID_LINE

    def learn_series(self, series: bytes) -> SeriesResult:
        """Parse and relabel a series text not seen before, and remember the result (the Python memo)."""
        result = self.relabel_series(series)
        self.misses += 1
        size = (
            len(series)
            + (0 if result.unchanged else len(result.output or b""))
            + len(result.utf8_output or b"")
        )
        # A full memo keeps what it has: clearing it would leave a body bigger than the memo with no hit
        # at all, scrape after scrape. end_of_scrape() renews it when the series have moved on.
        if len(self.series) < self.memo_size and self.memo_bytes + size <= MEMO_BYTE_LIMIT:
            self.series[series] = result
            self.memo_bytes += size
        else:
            self.refused_insert = True
        return result

    def filter_steps(self) -> tuple[FilterStep, ...] | None:
        """The rules as data for the compiled engine's cold path, when they only keep or drop series and no
        label limit applies (so a series' fate depends only on the values the rules read); else None."""
        limits = self.limits
        if limits.label_limit or limits.label_name_length_limit or limits.label_value_length_limit:
            return None
        return self.program.filter_steps()

    @property
    def memo_entries(self) -> int:
        """Series whose result is remembered, in whichever engine's memo."""
        native = len(self.native_memo) if isinstance(self.native_memo, Sized) else 0
        return len(self.series) + native

    @property
    def memo_full(self) -> bool:
        """Whether the memo took no more series (by count or by bytes) since it was last renewed."""
        return len(self.series) >= self.memo_size or self.refused_insert

    def end_of_scrape(self, samples: int, misses: int, *, was_full: bool) -> None:
        """After a body: forget a full memo of which this body used less than half.

        Its series have moved on (pods come and go): the next scrape fills it anew.
        """
        hits = samples - misses
        if was_full and hits * 2 < len(self.series):
            self.series.clear()
            self.memo_bytes = 0
            self.refused_insert = False

    def _relabel(self, series: bytes, parsed: ParsedSeries) -> SeriesResult:
        name, labels = parsed.name, parsed.labels
        relabeled = labels if self.program.is_empty else self.program.apply(labels)
        if relabeled is None:
            return SeriesResult(None, name, renamed=False, drop_reason="relabel")
        if relabeled is labels or relabeled == labels:
            relabeled = labels  # same label set: keep the input's label order, and so its text
            # The common case: the text goes out as it is (empty label values included: they are valid
            # text, and Prometheus reads them as absent labels).
            if parsed.canonical:
                return SeriesResult(
                    series,
                    name,
                    renamed=False,
                    unchanged=True,
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
        if len(tail) <= _TAIL_MEMO_LIMIT:  # real tails are short; long ones are checked every time
            memo = self.openmetrics_tails if openmetrics else self.tails
            if len(memo) >= self.memo_size:
                memo.clear()
            memo[tail] = learned
        return learned
