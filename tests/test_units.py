"""Durations and sizes as Prometheus writes them: what is read, how it prints, and what is refused."""

from __future__ import annotations

import re

import pytest

from relay.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("0s", 0),
        ("10s", 10),
        ("1m30s", 90),
        ("500ms", 0.5),
        ("1h", 3600),
        ("2d", 172800),
        ("1w", 604800),
        ("1y", 365 * 86400),
        ("01s", 1),
        ("1d2h3m4s5ms", 93784.005),
    ],
)
def test_durations(text, seconds):
    """Prometheus durations are read in seconds, units from years down to milliseconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "s", "1s1m", "1h1h", "1.5s", "-1s", "10 s", "1S", " 1s"])
def test_bad_durations(text):
    """Anything Prometheus' ParseDuration refuses (no unit, units out of order or repeated, fractions, signs,
    blanks, capitals) is refused with the text and an example of what to write."""
    message = f"not a duration: {text!r} (use a number with a unit, e.g. 10s, 1m30s, 500ms)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0004, "0s"), (0.001, "1ms"), (90, "1m30s"), (604800, "1w"), (365 * 86400 + 1, "1y1s")],
)
def test_duration_formatting(seconds, text):
    """Durations print as Prometheus prints them, largest unit first, to the millisecond."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["1m30s", "500ms", "1h", "10s", "1d2h3m4s5ms"])
def test_duration_formatting_round_trips(text):
    """A duration written as Prometheus writes it prints back the same."""
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1024", 1024),
        ("1B", 1),
        ("1KB", 1024),
        ("1kb", 1024),
        ("64MB", 64 << 20),
        ("1GiB", 1 << 30),
        ("2 mib", 2 << 20),
        (" 2KB ", 2048),
        ("1TB", 1 << 40),
        ("1PiB", 1 << 50),
    ],
)
def test_sizes(text, size):
    """Sizes are bytes, with base-2 units in either spelling and any case, as Prometheus reads them."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "1.5MB", "-1", "1XB", "1EB", "10s"])
def test_bad_sizes(text):
    """A size without a whole number or with an unknown unit is refused with the units one may write."""
    message = f"not a size: {text!r} (use bytes or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_size(text)
