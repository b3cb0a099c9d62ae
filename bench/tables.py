"""Result tables: rows of formatted cells, printed as Markdown with the machine and the command."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bench.machine import command_line, machine_facts


@dataclass
class Table:
    """One benchmark's result: a title, column names, rows of cells and notes printed below."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        """Append a row; cells are formatted with str()."""
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(cell) for cell in cells])

    def render(self) -> str:
        """The table as Markdown, followed by its notes, the machine and the command."""
        widths = [max(len(row[i]) for row in [self.columns, *self.rows]) for i in range(len(self.columns))]

        def line(cells: list[str]) -> str:
            return (
                "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"
            )

        parts = [f"### {self.title}", "", line(self.columns), line(["-" * width for width in widths])]
        parts += [line(row) for row in self.rows]
        parts.append("")
        parts += [f"- {note}" for note in self.notes]
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        parts.append(f"- machine: {machine_facts().line()}; load average {load} when printed")
        parts.append(f"- command: `{command_line()}`")
        return "\n".join(parts) + "\n"

    def print(self) -> None:
        """Print the rendered table, flushed at once so a long run shows progress."""
        print(self.render(), flush=True)


def rate(count: float, seconds: float) -> str:
    """count/seconds in a short human form (1.23M, 456k)."""
    if seconds <= 0:
        return "-"
    value = count / seconds
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.2f}{suffix}"
    return f"{value:.0f}"


def megabytes(size: float) -> str:
    """A byte count in MB (10^6 bytes)."""
    return f"{size / 1e6:.1f}"


def mebibytes(size: float) -> str:
    """A byte count in MiB (2^20 bytes), for memory."""
    return f"{size / 2**20:.1f}"


def seconds(value: float) -> str:
    """A duration, in ms below one second."""
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def ratio(numerator: float, denominator: float) -> str:
    """numerator/denominator as `1.23x`."""
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "-"
