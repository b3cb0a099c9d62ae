"""An upstream's health as the relay keeps it: nothing before the first scrape, the memo's hit ratio."""

from __future__ import annotations

import pytest

from relay.health import Health, PassReport


def pass_report(samples_in: int, memo_misses: int) -> PassReport:
    """A successful pass of `samples_in` sample lines, `memo_misses` of them new to the memo."""
    return PassReport(
        at=0.0,
        duration=0.1,
        ok=True,
        samples_in=samples_in,
        samples_out=samples_in,
        dropped={},
        memo_misses=memo_misses,
        memo_entries=memo_misses,
        received_bytes=0,
        decompressed_bytes=0,
    )


@pytest.mark.parametrize(
    ("samples_in", "memo_misses", "ratio"),
    [
        (0, 0, None),  # an empty body: no ratio rather than a division by zero
        (10, 10, 0.0),  # a cold memo
        (10, 4, 0.6),
        (10, 0, 1.0),  # a warm memo
        (10, 25, 0.0),  # another body sharing the memo missed meanwhile: never below zero
    ],
)
def test_memo_hit_ratio(samples_in, memo_misses, ratio):
    """The hit ratio is the share of sample lines the memo knew, None for an empty pass, never negative."""
    assert pass_report(samples_in, memo_misses).memo_hit_ratio == ratio


def test_a_new_upstream_has_no_scrape_and_no_pass():
    """Before its first scrape an upstream's health holds no result (the page says "not scraped yet")."""
    health = Health()
    assert (health.last_scrape, health.last_pass) == (None, None)
