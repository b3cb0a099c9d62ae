"""Metric families in Prometheus text format 0.0.4: counters, gauges, histograms, summaries, escaping.

Families are rendered as client_golang's gatherer writes them: sorted by name, HELP and TYPE first, label
values and HELP texts escaped, whole-number values without a fraction.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

LabelValues = tuple[str, ...]
"""The values of a series' labels, in the order of its family's label names."""
Draw = Callable[[], float]
"""A source of observed values: each call gives the next one."""
F = TypeVar("F", bound="_Family")

# The most samples drawn for one series per step: a long step (the first one covers hours of uptime)
# spreads its observations over this many drawn values instead of drawing each one.
_MAX_DRAWS = 24


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP text as the text format writes it: only backslash and newline are escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Go's client writes it: whole numbers without a fraction, and +Inf, -Inf, NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if abs(value) < 1e15 and value == int(value):
        return str(int(value))
    return repr(value)


class _Family:
    """One metric family: name, HELP, TYPE, label names; subclasses hold the samples."""

    kind: ClassVar[str]

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...]) -> None:
        self.name = name
        self.help_text = help_text
        self.label_names = label_names

    def render(self, lines: list[str]) -> None:
        """Append the HELP and TYPE lines, then every sample line."""
        lines.append(f"# HELP {self.name} {escape_help(self.help_text)}")
        lines.append(f"# TYPE {self.name} {self.kind}")
        lines.extend(self._samples())

    def _samples(self) -> Iterable[str]:
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

    def _samples(self) -> Iterable[str]:
        return (f"{self._series('', labels)} {format_value(v)}" for labels, v in self._values.items())


class Counter(_Scalar):
    """A counter family: values only grow."""

    kind = "counter"

    def add(self, labels: LabelValues, amount: float = 1.0) -> None:
        """Add `amount` (0 creates the series) to the series with `labels`."""
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot go down by {amount}")
        key = self._checked(labels)
        self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Scalar):
    """A gauge family: values go anywhere."""

    kind = "gauge"

    def set(self, labels: LabelValues, value: float) -> None:
        """Set the series with `labels` to `value`."""
        self._values[self._checked(labels)] = value


@dataclass
class _Distribution:
    """The observations of one histogram series: per-bucket counts (the last is +Inf) and their sum."""

    counts: list[int]
    total: float = 0.0


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
        data = self._series_data.setdefault(
            self._checked(labels), _Distribution([0] * (len(self.bounds) + 1))
        )
        for weight in _weights(count):
            value = draw()
            # `le` means "less than or equal", which bisect_left's first bound >= value matches.
            data.counts[bisect.bisect_left(self.bounds, value)] += weight
            data.total += value * weight

    def _samples(self) -> Iterable[str]:
        for labels, data in self._series_data.items():
            cumulative = 0
            for bound, count in zip((*self.bounds, math.inf), data.counts, strict=True):
                cumulative += count
                yield f"{self._series('_bucket', labels, ('le', format_value(bound)))} {cumulative}"
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

    def _samples(self) -> Iterable[str]:
        for labels, recent in self._recent.items():
            ordered = sorted(recent)
            for quantile in self.quantiles:
                value = ordered[round(quantile * (len(ordered) - 1))] if ordered else math.nan
                series = self._series("", labels, ("quantile", format_value(quantile)))
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

    def render(self) -> bytes:
        """The whole exposition."""
        lines: list[str] = []
        for name in sorted(self._families):
            self._families[name].render(lines)
        lines.append("")
        return "\n".join(lines).encode("utf-8")

    def _register(self, family: F) -> F:
        if family.name in self._families:
            raise ValueError(f"a family called {family.name} exists already")
        self._families[family.name] = family
        return family
