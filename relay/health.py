"""Each upstream's health as the relay last saw it: its latest scrape and upstream request (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScrapeOutcome:
    """How one scraper's request for an upstream ended."""

    at: float  # wall-clock end, for "2 min ago"
    duration: float
    ok: bool
    relayed_bytes: int
    reason: str = ""
    explanation: str = ""  # what happened, the likely cause, what to do (ScrapeError.explanation())
    aborted: bool = False  # failed after part of the body was sent: the connection was reset


@dataclass(frozen=True, slots=True)
class PassReport:
    """One request to the upstream and its relabel pass, shared by every scrape that joined it."""

    at: float
    duration: float
    ok: bool
    samples_in: int
    samples_out: int
    dropped: dict[str, int]
    memo_misses: int
    memo_entries: int
    received_bytes: int  # as they came over the wire (compressed, if the upstream compressed)
    decompressed_bytes: int

    @property
    def memo_hit_ratio(self) -> float | None:
        """Share of sample lines whose series the memo already knew; None for an empty pass."""
        if not self.samples_in:
            return None
        return max(0.0, 1.0 - self.memo_misses / self.samples_in)


@dataclass(slots=True)
class Health:
    """What the landing page and the metrics show of one upstream; kept across reloads of the same name."""

    last_scrape: ScrapeOutcome | None = None
    last_pass: PassReport | None = None
