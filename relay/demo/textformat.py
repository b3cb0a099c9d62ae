"""Metric families in the text format 0.0.4 and in OpenMetrics 1.0: counters, gauges, histograms, summaries.

Families are rendered as client_golang's gatherer writes them: sorted by name, HELP and TYPE first, label
values and HELP texts escaped, whole-number values without a fraction. OpenMetrics differs where its
specification asks: a counter's family is named without `_total`, `le` and `quantile` are written as floats
(`1.0`), HELP escapes `"` too, counters and buckets carry their exemplars, and the body ends with `# EOF`.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

LabelValues = tuple[str, ...]
"""The values of a series' labels, in the order of its family's label names."""
Draw = Callable[[], float]
"""A source of observed values: each call gives the next one."""
F = TypeVar("F", bound="_Family")

# The most samples drawn for one series per step: a long step (the first one covers hours of uptime)
# spreads its observations over this many drawn values instead of drawing each one.
_MAX_DRAWS = 24
_COUNTER_SUFFIX = "_total"


def escape_label_value(value: str) -> str:
    """A label value as both formats write it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str, openmetrics: bool = False) -> str:
    """A HELP text: the text format escapes backslash and newline, OpenMetrics double quotes as well."""
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n")
    return escaped.replace('"', '\\"') if openmetrics else escaped


def format_value(value: float) -> str:
    """A sample value as Go's client writes it: whole numbers without a fraction, and +Inf, -Inf, NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if abs(value) < 1e15 and value == int(value):
        return str(int(value))
    return repr(value)


def format_bound(value: float, openmetrics: bool) -> str:
    """An `le` or `quantile` label value: OpenMetrics writes whole numbers as floats (`1.0`), text not."""
    text = format_value(value)
    return f"{text}.0" if openmetrics and text.lstrip("-").isdigit() else text


@dataclass(frozen=True, slots=True)
class Exemplar:
    """A traced observation that OpenMetrics shows beside a counter or a bucket: trace id, value, time."""

    trace_id: str
    value: float
    timestamp: float

    def render(self) -> str:
        """The exemplar as OpenMetrics appends it to a sample line."""
        return f' # {{trace_id="{self.trace_id}"}} {format_value(self.value)} {self.timestamp:.3f}'


class _Family:
    """One metric family: name, HELP, TYPE, label names; subclasses hold the samples."""

    kind: ClassVar[str]

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...]) -> None:
        self.name = name
        self.help_text = help_text
        self.label_names = label_names

    def render(self, lines: list[str], openmetrics: bool) -> None:
        """Append the HELP and TYPE lines, then every sample line, in the format asked for."""
        family = self.family_name(openmetrics)
        lines.append(f"# HELP {family} {escape_help(self.help_text, openmetrics)}")
        lines.append(f"# TYPE {family} {self.kind}")
        lines.extend(self._samples(openmetrics))

    def family_name(self, openmetrics: bool) -> str:
        """The name HELP and TYPE give: the same in both formats (counters override this)."""
        return self.name

    def _samples(self, openmetrics: bool) -> Iterable[str]:
        raise NotImplementedError

    def _series(self, suffix: str, labels: LabelValues, extra: tuple[str, str] | None = None) -> str:
        pairs = [
            f'{name}="{escape_label_value(value)}"'
            for name, value in zip(self.label_names, labels, strict=True)
        ]
        if extra is not None:
            pairs.append(f'{extra[0]}="{extra[1]}"')
        return f"{self.name}{suffix}{{{','.join(pairs)}}}" if pairs else f"{self.name}{suffix}"

    def _checked(self, labels: LabelValues) -> LabelValues:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {labels}")
        return labels


class _Scalar(_Family):
    """A family whose series each have one value (counters and gauges)."""

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...] = ()) -> None:
        super().__init__(name, help_text, label_names)
        self._values: dict[LabelValues, float] = {}
        self._exemplars: dict[LabelValues, Exemplar] = {}

    def _samples(self, openmetrics: bool) -> Iterable[str]:
        for labels, value in self._values.items():
            exemplar = self._exemplars.get(labels) if openmetrics else None
            yield f"{self._series('', labels)} {format_value(value)}{exemplar.render() if exemplar else ''}"


class Counter(_Scalar):
    """A counter family: values only grow; the name ends with `_total`, so both formats name samples alike."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...] = ()) -> None:
        if not name.endswith(_COUNTER_SUFFIX):
            raise ValueError(f"counter {name}: a counter's name ends with {_COUNTER_SUFFIX}")
        super().__init__(name, help_text, label_names)

    def family_name(self, openmetrics: bool) -> str:
        """OpenMetrics names the family without `_total`, which only its samples carry."""
        return self.name.removesuffix(_COUNTER_SUFFIX) if openmetrics else self.name

    def add(self, labels: LabelValues, amount: float = 1.0, exemplar: Exemplar | None = None) -> None:
        """Add `amount` (0 creates the series) to the series with `labels`; `exemplar` traces the increase."""
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot go down by {amount}")
        key = self._checked(labels)
        self._values[key] = self._values.get(key, 0.0) + amount
        if exemplar is not None:
            self._exemplars[key] = exemplar


class Gauge(_Scalar):
    """A gauge family: values go anywhere."""

    kind = "gauge"

    def set(self, labels: LabelValues, value: float) -> None:
        """Set the series with `labels` to `value`."""
        self._values[self._checked(labels)] = value


@dataclass
class _Distribution:
    """The observations of one histogram series: per-bucket counts (the last is +Inf), their sum, and the
    latest exemplar of each bucket that has one (by bucket index)."""

    counts: list[int]
    total: float = 0.0
    exemplars: dict[int, Exemplar] = field(default_factory=dict)


class Histogram(_Family):
    """A histogram family with fixed upper bounds; +Inf is implicit."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, label_names: tuple[str, ...], bounds: Iterable[float]
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.bounds = tuple(bounds)
        self._series_data: dict[LabelValues, _Distribution] = {}

    def observe(self, labels: LabelValues, count: int, draw: Draw) -> None:
        """Record `count` observations with values from `draw` (0 creates the series)."""
        data = self._distribution(labels)
        for weight in _weights(count):
            self._record(data, draw(), weight)

    def observe_traced(self, labels: LabelValues, exemplar: Exemplar) -> None:
        """Record the one observation `exemplar` traced; its bucket shows the exemplar in OpenMetrics."""
        data = self._distribution(labels)
        data.exemplars[self._record(data, exemplar.value, 1)] = exemplar

    def _distribution(self, labels: LabelValues) -> _Distribution:
        return self._series_data.setdefault(
            self._checked(labels), _Distribution([0] * (len(self.bounds) + 1))
        )

    def _record(self, data: _Distribution, value: float, weight: int) -> int:
        """Count `weight` observations of `value`; the index of their bucket."""
        # `le` means "less than or equal", which bisect_left's first bound >= value matches.
        bucket = bisect.bisect_left(self.bounds, value)
        data.counts[bucket] += weight
        data.total += value * weight
        return bucket

    def _samples(self, openmetrics: bool) -> Iterable[str]:
        for labels, data in self._series_data.items():
            cumulative = 0
            for index, (bound, count) in enumerate(zip((*self.bounds, math.inf), data.counts, strict=True)):
                cumulative += count
                series = self._series("_bucket", labels, ("le", format_bound(bound, openmetrics)))
                exemplar = data.exemplars.get(index) if openmetrics else None
                yield f"{series} {cumulative}{exemplar.render() if exemplar else ''}"
            yield f"{self._series('_sum', labels)} {format_value(data.total)}"
            yield f"{self._series('_count', labels)} {cumulative}"


class Summary(_Family):
    """A summary family: quantiles over a window of recent observations, and running sum and count."""

    kind = "summary"
    quantiles: ClassVar[tuple[float, ...]] = (0.0, 0.25, 0.5, 0.75, 1.0)

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...], window: int = 100) -> None:
        super().__init__(name, help_text, label_names)
        self._window = window
        self._recent: dict[LabelValues, deque[float]] = {}
        self._totals: dict[LabelValues, tuple[float, int]] = {}

    def observe(self, labels: LabelValues, count: int, draw: Draw) -> None:
        """Record `count` observations with values from `draw` (0 creates the series)."""
        key = self._checked(labels)
        recent = self._recent.setdefault(key, deque(maxlen=self._window))
        total, seen = self._totals.get(key, (0.0, 0))
        for weight in _weights(count):
            value = draw()
            recent.append(value)
            total, seen = total + value * weight, seen + weight
        self._totals[key] = (total, seen)

    def _samples(self, openmetrics: bool) -> Iterable[str]:
        for labels, recent in self._recent.items():
            ordered = sorted(recent)
            for quantile in self.quantiles:
                value = ordered[round(quantile * (len(ordered) - 1))] if ordered else math.nan
                series = self._series("", labels, ("quantile", format_bound(quantile, openmetrics)))
                yield f"{series} {format_value(value)}"
            total, seen = self._totals[labels]
            yield f"{self._series('_sum', labels)} {format_value(total)}"
            yield f"{self._series('_count', labels)} {seen}"


def _weights(count: int) -> list[int]:
    """`count` observations split into at most _MAX_DRAWS weights that add up to `count`."""
    draws = min(count, _MAX_DRAWS)
    if draws == 0:
        return []
    base, extra = divmod(count, draws)
    return [base + 1] * extra + [base] * (draws - extra)


def exponential_bounds(start: float, factor: float, count: int) -> tuple[float, ...]:
    """`count` upper bounds from `start`, each `factor` times the one before, as client_golang makes them."""
    return tuple(start * factor**index for index in range(count))


class Registry:
    """The families of one exposition, rendered sorted by name like client_golang's gatherer does."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
        """A new counter family."""
        return self._register(Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Gauge:
        """A new gauge family."""
        return self._register(Gauge(name, help_text, labels))

    def histogram(
        self, name: str, help_text: str, bounds: Iterable[float], labels: tuple[str, ...] = ()
    ) -> Histogram:
        """A new histogram family with `bounds` (without +Inf)."""
        return self._register(Histogram(name, help_text, labels, bounds))

    def summary(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Summary:
        """A new summary family."""
        return self._register(Summary(name, help_text, labels))

    def render(self, openmetrics: bool = False) -> bytes:
        """The whole exposition, in OpenMetrics 1.0 if asked, else in the text format 0.0.4."""
        lines: list[str] = []
        for name in sorted(self._families):
            self._families[name].render(lines, openmetrics)
        if openmetrics:
            lines.append("# EOF")
        lines.append("")
        return "\n".join(lines).encode("utf-8")

    def _register(self, family: F) -> F:
        if family.name in self._families:
            raise ValueError(f"a family called {family.name} exists already")
        self._families[family.name] = family
        return family
