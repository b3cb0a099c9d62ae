"""The simulation's randomness: event counts, latencies and jitter, seeded so a run can be repeated."""

from __future__ import annotations

import math
import random

from relay.demo.textformat import Draw

_MEDIAN_SPREAD = 0.6
_NORMAL_ENOUGH = 20.0


class Dice:
    """The simulation's randomness, seeded so a run can be repeated."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)  # noqa: S311 -- simulated load, not cryptography

    def events(self, rate: float, seconds: float) -> int:
        """How many events with `rate` per second happen in `seconds`, roughly Poisson distributed."""
        mean = rate * seconds
        if mean > _NORMAL_ENOUGH:
            # Poisson's normal approximation: a long step does not land exactly on the mean every time.
            mean = max(self._random.gauss(mean, math.sqrt(mean)), 0.0)
        return int(mean + self._random.random())

    def latency(self, median: float) -> Draw:
        """Draws of a log-normal latency around `median`, the usual shape of request durations."""
        return lambda: self._random.lognormvariate(math.log(median), _MEDIAN_SPREAD)

    def around(self, value: float, spread: float = 0.03) -> float:
        """`value` give or take `spread` (a fraction of it)."""
        return value * self._random.uniform(1 - spread, 1 + spread)

    def trace_id(self) -> str:
        """A W3C trace id: 32 hex digits, as a tracer would give a traced request."""
        return f"{self._random.getrandbits(128):032x}"

    def between(self, low: int, high: int) -> int:
        """A whole number from `low` to `high` inclusive."""
        return self._random.randint(low, high)
