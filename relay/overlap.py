"""Feeding a body to its line engine: the compiled one in a worker thread, overlapping reads and writes.

While a worker relabels one batch of chunks without the GIL, the event loop reads and decrypts the next, and
a publisher task writes finished batches to the scrapers in order. One call per chunk would spend the gain on
thread hand-offs, so batches grow from one chunk (a short time to first byte) to BATCH_BYTES, and a batch is
handed over only when the worker is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from relay.errors import ScrapeError
from relay.pipeline import BodyRelabeler

BATCH_BYTES = 1 << 20
BACKLOG_BYTES = 4 << 20
"""Read ahead of a busy worker at most this much, then wait for it: memory stays bounded."""
QUEUED_BATCHES = 2
"""Finished batches waiting for slow scrapers, at most; then reading waits too."""

_workers = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1), thread_name_prefix="relay-engine")

Publish = Callable[[bytes], Awaitable[None]]
Batches = asyncio.Queue["asyncio.Future[bytes] | None"]


async def relabel_stream(relabeler: BodyRelabeler, chunks: AsyncIterable[bytes], publish: Publish) -> None:
    """Feed every chunk to `relabeler` and publish its output in order (finish() is the caller's).

    Whatever was read before the upstream broke off is published before its error is raised.
    """
    if not relabeler.releases_gil:
        async for chunk in chunks:
            await publish(relabeler.feed(chunk))
        return
    loop = asyncio.get_running_loop()
    batches: Batches = asyncio.Queue(QUEUED_BATCHES)
    publisher = asyncio.ensure_future(_publish_in_order(batches, publish))
    batch: list[bytes] = []
    size = 0
    threshold = 1
    working: asyncio.Future[bytes] | None = None

    async def hand_over() -> None:
        nonlocal working, batch, size
        working = loop.run_in_executor(_workers, relabeler.feed_many, batch)
        working.add_done_callback(_retrieve)
        batch, size = [], 0
        await batches.put(working)

    try:
        async for chunk in chunks:
            batch.append(chunk)
            size += len(chunk)
            if working is not None and not working.done() and size >= BACKLOG_BYTES:
                await asyncio.wait([working])
            if (working is None or working.done()) and size >= threshold:
                await hand_over()
                threshold = min(threshold * 4 or 1, BATCH_BYTES)
            if publisher.done():
                break  # a batch failed: its error is raised below
        if batch and not publisher.done():
            await hand_over()
    except ScrapeError:
        await batches.put(None)
        with contextlib.suppress(ScrapeError):
            await publisher  # an error earlier in the body wins over the break
        raise
    except BaseException:
        publisher.cancel()
        raise
    await batches.put(None)
    await publisher


async def _publish_in_order(batches: Batches, publish: Publish) -> None:
    """Publish each finished batch in order until None; after a failure, only drain the queue."""
    failure: BaseException | None = None
    while (batch := await batches.get()) is not None:
        if failure is not None:
            continue
        try:
            await publish(await batch)
        except Exception as exc:  # noqa: BLE001 - kept and raised once the reader has stopped
            failure = exc
    if failure is not None:
        raise failure


def _retrieve(future: asyncio.Future[bytes]) -> None:
    """Mark a batch's error as seen, so that asyncio does not log it when the body failed elsewhere."""
    if not future.cancelled():
        future.exception()
