"""Prometheus-style durations (`1m30s`) and byte sizes (`64MB`), parsed without I/O."""

from __future__ import annotations

import re

_DURATION_UNITS: tuple[tuple[str, float], ...] = (
    ("y", 365 * 24 * 3600.0),
    ("w", 7 * 24 * 3600.0),
    ("d", 24 * 3600.0),
    ("h", 3600.0),
    ("m", 60.0),
    ("s", 1.0),
    ("ms", 0.001),
)
# Units in this order, each at most once, as Prometheus' model.ParseDuration accepts them.
_DURATION_RE = re.compile("".join(rf"(?:(?P<{unit}>[0-9]+){unit})?" for unit, _ in _DURATION_UNITS))

# Prometheus' body_size_limit uses base-2 units with the SI spelling (`KB` = 1024 bytes), as
# alecthomas/units.Base2Bytes does; the explicit IEC spelling is accepted too.
_SIZE_FACTORS: dict[str, int] = {
    "": 1,
    "B": 1,
    "KB": 1 << 10,
    "KIB": 1 << 10,
    "MB": 1 << 20,
    "MIB": 1 << 20,
    "GB": 1 << 30,
    "GIB": 1 << 30,
    "TB": 1 << 40,
    "TIB": 1 << 40,
    "PB": 1 << 50,
    "PIB": 1 << 50,
}
_SIZE_RE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>[A-Za-z]*)")


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as `10s`, `1m30s`, `500ms` or `0`; ValueError otherwise."""
    if text == "0":
        return 0.0
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"not a duration: {text!r} (use a number with a unit, e.g. 10s, 1m30s, 500ms)")
    return sum(int(match[unit]) * factor for unit, factor in _DURATION_UNITS if match[unit])


def format_duration(seconds: float) -> str:
    """A duration as Prometheus prints it, for messages and the landing page."""
    milliseconds = round(seconds * 1000)
    if milliseconds == 0:
        return "0s"
    parts = []
    for unit, factor in _DURATION_UNITS:
        count, milliseconds = divmod(milliseconds, round(factor * 1000))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(text: str) -> int:
    """Bytes in a size such as `0`, `1048576`, `512KB` or `64MiB` (base 2); ValueError otherwise."""
    match = _SIZE_RE.fullmatch(text.strip())
    factor = _SIZE_FACTORS.get(match["unit"].upper()) if match else None
    if match is None or factor is None:
        raise ValueError(f"not a size: {text!r} (use bytes or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB)")
    return int(match["number"]) * factor
