"""The engine seam: which line engine relabels a body, the compiled one or the Python reference (pure).

Both engines take the same arguments and give the same bytes, counts and errors (the test suite runs on
both, and a differential test and a fuzz target hold them equal). The compiled engine is used when it was
built and `RELAY_NO_EXTENSIONS` is not set; the Python engine is the executable specification and the
fallback for machines without a C compiler.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Protocol

from relay.pyengine import PythonBodyRelabeler
from relay.rules import Rules


class BodyRelabeler(Protocol):
    """Turns one upstream body, chunk by chunk, into the relayed body, and counts what it did."""

    samples_in: int
    samples_out: int
    releases_gil: bool  # feed_many() is worth running in a worker thread

    @property
    def dropped(self) -> Counter[str]:
        """Samples left out, by reason (rules.DROP_REASONS)."""

    @property
    def memo_misses(self) -> int:
        """Series of this body that the memo did not know."""

    def feed(self, chunk: bytes) -> bytes:
        """The relayed bytes for the lines that `chunk` completes."""

    def feed_many(self, chunks: list[bytes]) -> bytes:
        """The relayed bytes for the lines that these chunks complete."""

    def finish(self) -> bytes:
        """The relayed bytes for the rest, once the body has ended."""


class EngineFactory(Protocol):
    """What makes a BodyRelabeler: an engine's class."""

    def __call__(self, rules: Rules, *, openmetrics: bool, utf8_names: bool) -> BodyRelabeler:
        """A relabeler for one body."""


def _native_engine() -> EngineFactory | None:
    if os.environ.get("RELAY_NO_EXTENSIONS"):
        return None
    try:
        from relay._engine import NativeBodyRelabeler  # noqa: PLC0415 - optional, compiled at install
    except ImportError:
        return None
    return NativeBodyRelabeler


NATIVE = _native_engine()
default_engine = "native" if NATIVE is not None else "python"
"""The engine bodies get unless the caller names one: `native` where it was built and not disabled."""


def body_relabeler(
    rules: Rules, *, openmetrics: bool = False, utf8_names: bool = False, engine: str | None = None
) -> BodyRelabeler:
    """A relabeler for one body of the upstream that `rules` belong to, on the chosen (or default) engine."""
    chosen = engine or default_engine
    if chosen == "python":
        return PythonBodyRelabeler(rules, openmetrics=openmetrics, utf8_names=utf8_names)
    if chosen != "native" or NATIVE is None:
        raise ValueError(f"line engine {chosen!r} is not available (have: {', '.join(available_engines())})")
    return NATIVE(rules, openmetrics=openmetrics, utf8_names=utf8_names)


def available_engines() -> tuple[str, ...]:
    """The engines this process can use, the default first."""
    return ("native", "python") if NATIVE is not None else ("python",)
