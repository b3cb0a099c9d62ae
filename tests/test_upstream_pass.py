"""One pass over a real TLS upstream: the relabeled body reaches the flight, and the pass reports once."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from relay.config import parse
from relay.errors import (
    DeadlineExceededError,
    InvalidExpositionError,
    LimitExceededError,
    RelayInternalError,
    ScrapeError,
    UpstreamConnectError,
    UpstreamStatusError,
)
from relay.flight import Flight
from relay.health import PassReport, ScrapeOutcome
from relay.negotiation import Preferences
from relay.rules import Rules
from relay.upstream import UpstreamClient
from relay.upstream_pass import upstream_pass
from tests.support import Handler, Pki, body_handler, config_yaml, running_upstream, trickle

TEXT = Preferences(openmetrics=False, utf8_names=False)
BODY = b"# TYPE up gauge\nup 1\n# TYPE kept gauge\nkept 2\ndropped_total 3\n"
DROP_RULE = (
    "    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: dropped_total\n"
    "        action: drop\n"
)


@dataclass
class ListRecorder:
    """A Recorder that keeps what it is told."""

    passes: list[PassReport] = field(default_factory=list)
    scrapes: list[ScrapeOutcome] = field(default_factory=list)

    def upstream_pass(self, report: PassReport) -> None:
        self.passes.append(report)

    def scrape_finished(self, outcome: ScrapeOutcome, error: ScrapeError | None) -> None:
        self.scrapes.append(outcome)

    def scrape_rejected(self) -> None:
        raise AssertionError("a pass never rejects a scrape")


@dataclass
class Pass:
    """What a pass gave: the body its follower read (up to the error), the error, and what was reported."""

    body: bytes
    error: BaseException | None
    content_type: str
    recorder: ListRecorder
    rules: Rules


@asynccontextmanager
async def client_for(url: str, pki: Pki, extra: str = "") -> AsyncIterator[tuple[UpstreamClient, Rules]]:
    """The client and rules of a one-upstream configuration for `url`."""
    upstream = parse(
        config_yaml(url, pki.client_files(), extra), source="r.yml", base_dir=Path("/")
    ).upstreams[0]
    async with aiohttp.ClientSession() as session:
        yield UpstreamClient(upstream, session), Rules.for_upstream(upstream)


async def run_pass(client: UpstreamClient, rules: Rules) -> Pass:
    """Run one pass for a flight with one follower, as a scrape does, and read what the follower gets."""
    recorder = ListRecorder()
    flight = Flight(lambda flight: upstream_pass(flight, client, rules, TEXT, recorder))
    follower = flight.join()
    assert follower is not None
    pieces: list[bytes] = []
    error: BaseException | None = None
    try:
        async for piece in follower.pieces():
            pieces.append(piece)
    except ScrapeError as exc:
        error = exc
    return Pass(b"".join(pieces), error, follower.content_type, recorder, rules)


async def pass_against(pki: Pki, handler: Handler, extra: str = "") -> Pass:
    """One pass against a real TLS upstream answering with `handler`."""
    async with (
        running_upstream(pki.server_context(), handler) as upstream,
        client_for(upstream.url, pki, extra) as (client, rules),
    ):
        return await run_pass(client, rules)


async def test_a_good_pass_publishes_the_relabeled_body_and_reports_once(pki, engine):
    """The flight gets the relabeled body and its Content-Type; one report says what the pass did."""
    done = await pass_against(pki, body_handler(BODY), DROP_RULE)
    assert done.error is None
    assert done.body == b"# TYPE up gauge\nup 1\n# TYPE kept gauge\nkept 2\n"
    assert done.content_type == "text/plain; version=0.0.4; charset=utf-8"
    (report,) = done.recorder.passes
    assert (report.ok, report.samples_in, report.samples_out, report.dropped) == (True, 3, 2, {"relabel": 1})
    assert (report.received_bytes, report.decompressed_bytes) == (len(BODY), len(BODY))
    assert (report.memo_misses, report.memo_entries) == (3, done.rules.memo_entries)
    assert report.memo_entries > 0
    assert done.recorder.scrapes == []  # scrapes are reported by each scraper, never by the pass


async def test_the_memo_carries_over_to_the_next_pass(pki, engine):
    """A second pass with the same rules finds every series in the memo."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        client_for(upstream.url, pki, DROP_RULE) as (client, rules),
    ):
        first = await run_pass(client, rules)
        second = await run_pass(client, rules)
    assert second.body == first.body
    assert [report.memo_misses for report in (*first.recorder.passes, *second.recorder.passes)] == [3, 0]


async def never_finishes(request: web.Request) -> web.StreamResponse:
    """An upstream answer that sends one sample and then trickles on for ever."""
    return await trickle(request, b"# TYPE up gauge\nup 1\n", pause=0.05)


@dataclass(frozen=True)
class Failure:
    """A way for a pass to fail, and what it must then raise and report."""

    handler: Handler
    extra: str  # configuration of the upstream
    error: type[ScrapeError]
    message: str  # part of the error's text
    samples_in: int  # sample lines read before the failure
    received: bool  # whether any body bytes arrived


FAILURES = [
    pytest.param(
        Failure(body_handler(b"no", status=500), "", UpstreamStatusError, "HTTP 500", 0, False), id="status"
    ),
    pytest.param(
        Failure(body_handler(b"up 1\nbroken line\n"), "", InvalidExpositionError, "line 2", 1, True),
        id="invalid-line",
    ),
    pytest.param(
        Failure(
            body_handler(BODY),
            "    body_size_limit: 10\n",
            LimitExceededError,
            "upstream body exceeds body_size_limit (10 bytes)",
            0,
            True,
        ),
        id="body-size-limit",
    ),
    pytest.param(
        Failure(
            never_finishes,
            "    timeout: 300ms\n",
            DeadlineExceededError,
            "scrape deadline of 0.3s exceeded",
            1,
            True,
        ),
        id="timeout",
    ),
]


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failed_pass_raises_and_reports_once(pki, engine, failure):
    """A failing pass hands its error to the flight and still reports once, as not ok, with what it read."""
    done = await pass_against(pki, failure.handler, failure.extra)
    assert isinstance(done.error, failure.error)
    assert failure.message in str(done.error)
    (report,) = done.recorder.passes
    assert report.ok is False
    assert report.samples_in == failure.samples_in
    assert (report.received_bytes > 0, report.decompressed_bytes > 0) == (failure.received, failure.received)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (just closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_upstream_reports_a_pass_with_nothing_received(pki):
    """No connection at all: the pass raises the connect error and reports once, nothing received."""
    async with client_for(f"https://127.0.0.1:{free_port()}/metrics", pki) as (client, rules):
        done = await run_pass(client, rules)
    assert isinstance(done.error, UpstreamConnectError)
    (report,) = done.recorder.passes
    assert (report.ok, report.samples_in, report.received_bytes, report.decompressed_bytes) == (
        False,
        0,
        0,
        0,
    )


class FailingFlight:
    """A flight whose every publish fails as no ScrapeError would: a bug in the relay."""

    content_type = ""

    async def publish(self, piece: bytes) -> None:
        raise RuntimeError("publish broke")


async def test_an_unexpected_error_is_an_internal_error_logged_and_reported_once(pki, caplog):
    """An error that is no ScrapeError becomes an internal error naming its type, logged with its
    traceback under the upstream's name, and the pass still reports once."""
    recorder = ListRecorder()
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        client_for(upstream.url, pki) as (client, rules),
    ):
        with (
            caplog.at_level(logging.ERROR, logger="relay.upstream_pass"),
            pytest.raises(RelayInternalError) as raised,
        ):
            await upstream_pass(FailingFlight(), client, rules, TEXT, recorder)  # type: ignore[arg-type]
    assert str(raised.value) == "internal error of the relay (RuntimeError); see its log"
    assert isinstance(raised.value.__cause__, RuntimeError)
    (record,) = caplog.records
    assert (record.getMessage(), record.__dict__["upstream"]) == ("unexpected error while relaying", "test")
    assert record.exc_info is not None
    (report,) = recorder.passes
    assert (report.ok, report.received_bytes) == (False, len(BODY))
