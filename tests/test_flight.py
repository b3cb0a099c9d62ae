"""Single flight: concurrent scrapes share one upstream request, yet each gets its own whole body."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from relay.flight import FOLLOWER_BACKLOG_BYTES, Flight
from tests.support import body_handler, config_yaml, running_relay, running_upstream

LINES = [b'relayed_lines_total{line="%d"} %d\n' % (i, i) for i in range(2000)]
BODY = b"# TYPE relayed_lines_total counter\n" + b"".join(LINES)


def slow_body(pause: float, pieces: int = 10, started: asyncio.Event | None = None) -> web.RequestHandler:
    """An upstream that sends BODY in `pieces` parts with `pause` seconds between them."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        await response.prepare(request)
        step = len(BODY) // pieces + 1
        for offset in range(0, len(BODY), step):
            await response.write(BODY[offset : offset + step])
            if started is not None:
                started.set()
            await asyncio.sleep(pause)
        return response

    return handle


async def scrape(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, bytes]:
    async with session.get(url, headers=headers) as response:
        return response.status, await response.read()


async def upstream_requests(session: aiohttp.ClientSession, base_url: str) -> float:
    async with session.get(f"{base_url}/relay/metrics") as response:
        text = await response.text()
    line = next(
        line for line in text.splitlines() if line.startswith("metrics_relay_upstream_requests_total")
    )
    return float(line.rsplit(" ", 1)[1])


async def test_twenty_concurrent_scrapes_make_one_upstream_request(pki, tmp_path):
    """20 scrapes at once: one upstream request, one relabel pass, 20 complete identical bodies."""
    async with (
        running_upstream(pki.server_context(), slow_body(0.02)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
        aiohttp.ClientSession() as session,
    ):
        answers = await asyncio.gather(*(scrape(session, f"{relay.base_url}/metrics") for _ in range(20)))
        assert len(upstream.requests) == 1
        assert await upstream_requests(session, relay.base_url) == 1
    assert answers == [(200, BODY)] * 20


async def test_a_late_scrape_gets_the_whole_body_replayed(pki, tmp_path):
    """A scrape joining a flight half way gets what was already produced, then the rest."""
    started = asyncio.Event()
    async with (
        running_upstream(pki.server_context(), slow_body(0.05, started=started)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
        aiohttp.ClientSession() as session,
    ):
        first = asyncio.create_task(scrape(session, f"{relay.base_url}/metrics"))
        await started.wait()
        await asyncio.sleep(0.12)
        second = await scrape(session, f"{relay.base_url}/metrics")
        assert await first == second == (200, BODY)
        assert len(upstream.requests) == 1


async def test_a_scraper_leaving_does_not_stop_the_others(pki, tmp_path):
    """One scraper disconnecting half way leaves the shared fetch running for the one still there."""
    started = asyncio.Event()
    async with (
        running_upstream(pki.server_context(), slow_body(0.05, started=started)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
        aiohttp.ClientSession() as session,
    ):
        staying = asyncio.create_task(scrape(session, f"{relay.base_url}/metrics"))
        async with aiohttp.ClientSession() as other, other.get(f"{relay.base_url}/metrics") as leaving:
            await leaving.content.readany()
        assert await staying == (200, BODY)
        assert len(upstream.requests) == 1


async def test_the_flight_stops_when_every_scraper_left(pki, tmp_path):
    """When the only scraper gives up, the upstream request is cancelled too."""
    upstream_cancelled = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        await response.prepare(request)
        try:
            for line in LINES * 1000:
                await response.write(line)
                await asyncio.sleep(0.01)
        except (asyncio.CancelledError, ConnectionResetError):
            upstream_cancelled.set()
            raise
        return response

    async with (
        running_upstream(pki.server_context(), endless) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        async with aiohttp.ClientSession() as session, session.get(f"{relay.base_url}/metrics") as response:
            await response.content.readany()
        await asyncio.wait_for(upstream_cancelled.wait(), timeout=5)
        assert len(relay.runtime.flights) == 0


async def test_errors_are_shared_and_reported_to_each_scraper(pki, tmp_path):
    """An upstream failing once fails every scrape that shared the request, each with a 502."""
    async with (
        running_upstream(pki.server_context(), slow_body(0.05)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
        aiohttp.ClientSession() as session,
    ):
        upstream.handler = body_handler(b"", status=503)
        answers = await asyncio.gather(*(scrape(session, f"{relay.base_url}/metrics") for _ in range(5)))
        assert {status for status, _ in answers} == {502}
        assert all(b"HTTP 503" in body for _, body in answers)
        upstream.handler = body_handler(BODY)
        assert await scrape(session, f"{relay.base_url}/metrics") == (200, BODY)  # failures are not reused


async def test_formats_and_configurations_never_share_a_flight(pki, tmp_path):
    """A text scraper and a UTF-8-capable one, or scrapes before and after a reload, use separate requests."""
    started = asyncio.Event()
    files = pki.client_files()
    async with (
        running_upstream(pki.server_context(), slow_body(0.05, started=started)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
        aiohttp.ClientSession() as session,
    ):
        url = f"{relay.base_url}/metrics"
        before = asyncio.create_task(scrape(session, url))
        utf8 = asyncio.create_task(
            scrape(session, url, Accept="text/plain;version=1.0.0;escaping=allow-utf-8")
        )
        await started.wait()
        drop_odd = (
            "    metric_relabel_configs:\n      - source_labels: [line]\n        regex: '.*[13579]'\n"
            "        action: drop\n"
        )
        relay.config_path.write_text(config_yaml(upstream.url, files, drop_odd))
        relay.runtime.reload()
        after = await scrape(session, url)
        assert await before == (200, BODY)
        assert (await utf8)[1] == BODY
        assert after == (200, b"# TYPE relayed_lines_total counter\n" + b"".join(LINES[::2]))
        assert len(upstream.requests) == 3


async def test_min_interval_serves_a_just_finished_body(pki, tmp_path):
    """With min_interval, a scrape right after another reuses its body; without, it fetches again."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        aiohttp.ClientSession() as s,
    ):
        async with running_relay(
            config_yaml(upstream.url, pki.client_files(), "    min_interval: 5s\n"), tmp_path
        ) as relay:
            assert [await scrape(s, f"{relay.base_url}/metrics") for _ in range(3)] == [(200, BODY)] * 3
            assert len(upstream.requests) == 1
        async with running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay:
            assert [await scrape(s, f"{relay.base_url}/metrics") for _ in range(3)] == [(200, BODY)] * 3
            assert len(upstream.requests) == 4


async def test_the_producer_waits_for_a_follower_far_behind():
    """A follower that does not read holds the producer once its backlog passes the limit."""
    produced = 0

    async def produce(flight: Flight) -> None:
        nonlocal produced
        for _ in range(100):
            await flight.publish(b"x" * (1 << 20))
            produced += 1

    flight = Flight(produce)
    follower = flight.join()
    assert follower is not None
    await asyncio.sleep(0.05)
    assert produced <= FOLLOWER_BACKLOG_BYTES >> 20
    received = 0
    async for piece in follower.pieces():
        received += len(piece)
    assert (produced, received) == (100, 100 << 20)


async def test_a_body_too_big_to_replay_closes_the_flight_to_newcomers():
    """Past history_limit a flight keeps no replay, so a newcomer must start its own."""
    release = asyncio.Event()

    async def produce(flight: Flight) -> None:
        await flight.publish(b"a" * 10)
        await release.wait()
        await flight.publish(b"b" * 10)

    flight = Flight(produce, history_limit=15)
    first = flight.join()
    await asyncio.sleep(0)
    assert flight.join() is not None  # 10 bytes so far: still replayable
    release.set()
    await flight.task
    assert flight.join() is None
    assert first is not None
    assert b"".join([piece async for piece in first.pieces()]) == b"a" * 10 + b"b" * 10


async def test_a_joined_scrape_keeps_its_own_deadline(pki, tmp_path):
    """A scraper joining one with a short timeout is not cut off at the other's deadline."""
    started = asyncio.Event()
    async with (
        running_upstream(pki.server_context(), slow_body(0.15, started=started)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
        aiohttp.ClientSession() as session,
    ):
        url = f"{relay.base_url}/metrics"
        hasty = asyncio.create_task(
            scrape_until_broken(session, url, {"X-Prometheus-Scrape-Timeout-Seconds": "1"})
        )
        await started.wait()
        patient = await scrape(session, url, **{"X-Prometheus-Scrape-Timeout-Seconds": "10"})
        assert await hasty == "broken"
        assert patient == (200, BODY)
        assert len(upstream.requests) == 1


async def scrape_until_broken(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    """'broken' when the body breaks off (as at a deadline after the first byte), else 'complete'."""
    try:
        async with session.get(url, headers=headers) as response:
            await response.read()
    except aiohttp.ClientPayloadError:
        return "broken"
    return "complete"


async def test_a_scraper_that_leaves_is_counted(pki, tmp_path, caplog):
    """A scraper disconnecting half way is counted as a failed scrape with reason scraper_gone, no error."""
    started = asyncio.Event()
    async with (
        running_upstream(pki.server_context(), slow_body(0.05, started=started)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        async with aiohttp.ClientSession() as session, session.get(f"{relay.base_url}/metrics") as response:
            await response.content.readany()
        for _ in range(50):
            if relay.runtime.upstreams["test"].health.last_scrape is not None:
                break
            await asyncio.sleep(0.02)
        assert relay.runtime.upstreams["test"].health.last_scrape.reason == "scraper_gone"
        assert len(upstream.requests) == 1
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


async def test_a_scraper_closing_while_the_relay_writes_is_counted_as_gone(pki, tmp_path, caplog):
    """Closing the connection early is scraper_gone, never an internal error.

    Depending on timing the relay learns it from the handler's cancellation or from a failed write (as
    `curl | head` shows); this test reaches the first reliably, the second only by chance.
    """
    big = b"".join(b'big_total{i="%d"} %d\n' % (i, i) for i in range(200_000))
    async with (
        running_upstream(pki.server_context(), body_handler(big)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        for _ in range(3):
            host, port = relay.base_url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
            await reader.read(1000)
            writer.close()
            await writer.wait_closed()
        for _ in range(100):
            if relay.runtime.upstreams["test"].health.last_scrape is not None:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert relay.runtime.upstreams["test"].health.last_scrape.reason == "scraper_gone"
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
