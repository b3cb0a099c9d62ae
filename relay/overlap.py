"""Feeding a body to its line engine: the compiled one in a worker thread, overlapping reads and writes.

While a worker relabels one batch of chunks without the GIL, the event loop reads and decrypts the next, and
a publisher task writes finished batches to the scrapers in order. One call per chunk would spend the gain on
thread hand-offs, so batches grow from one chunk (a short time to first byte) to BATCH_BYTES, and a batch is
handed over only when the worker is free.
"""

from __future__ import annotations

import asyncio
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
    """Feed every chunk to `relabeler`, then finish the body; publish the output in order.

    Errors come in the order of the body, as with the Python engine (which feeds each chunk before it reads
    the next): the first batch that fails stops the reading, and an engine error in what was read before the
    upstream broke off wins over the break.
    """
    if not relabeler.releases_gil:
        async for chunk in chunks:
            await publish(relabeler.feed(chunk))
        await publish(relabeler.finish())
        return
    pipeline = _Pipeline(relabeler, publish)
    try:
        async for chunk in chunks:
            if not await pipeline.add(chunk):
                break  # a batch failed: close() raises its error
    except ScrapeError:
        await pipeline.close()  # raises an error from earlier in the body, if a batch had one
        raise
    except BaseException:
        pipeline.cancel()
        raise
    await pipeline.close()
    # finish() takes the memo's lock, which another body's batch may hold: not on the event loop.
    await publish(await pipeline.run(relabeler.finish))


class _Pipeline:
    """One body's batches: to a worker one at a time, in order; published by a task of their own."""

    def __init__(self, relabeler: BodyRelabeler, publish: Publish) -> None:
        self._loop = asyncio.get_running_loop()
        self._relabeler = relabeler
        self._batches: Batches = asyncio.Queue(QUEUED_BATCHES)
        self._publisher = asyncio.ensure_future(_publish_in_order(self._batches, publish))
        self._batch: list[bytes] = []
        self._size = 0
        self._threshold = 1
        self._working: asyncio.Future[bytes] | None = None

    async def add(self, chunk: bytes) -> bool:
        """Take a chunk; hand the batch over when the worker is free. False once a batch has failed."""
        self._batch.append(chunk)
        self._size += len(chunk)
        working = self._working
        if working is not None and not working.done() and self._size >= BACKLOG_BYTES:
            await asyncio.wait([working])
        if (self._working is None or self._working.done()) and self._size >= self._threshold:
            await self._hand_over()
            self._threshold = min(self._threshold * 4, BATCH_BYTES)
        return not self._publisher.done()

    async def close(self) -> None:
        """Hand over what is left and wait until every batch is published; raise the first batch's error."""
        if self._batch and not self._publisher.done():
            await self._hand_over()
        await self._put(None)
        await self._publisher

    def cancel(self) -> None:
        """Stop publishing (batches under way finish in their threads, unheeded)."""
        self._publisher.cancel()

    def run(self, function: Callable[..., bytes], *args: object) -> asyncio.Future[bytes]:
        """`function(*args)` in a worker thread."""
        future = self._loop.run_in_executor(_workers, function, *args)
        future.add_done_callback(_retrieve)
        return future

    async def _hand_over(self) -> None:
        if self._working is not None:  # one feed_many() at a time: the engine frames chunks in order
            await asyncio.wait([self._working])
        self._working = self.run(self._relabeler.feed_many, self._batch)
        self._batch, self._size = [], 0
        await self._put(self._working)

    async def _put(self, item: asyncio.Future[bytes] | None) -> None:
        """Queue for the publisher, unless it has stopped (then nobody would take it)."""
        put = asyncio.ensure_future(self._batches.put(item))
        await asyncio.wait([put, self._publisher], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()


async def _publish_in_order(batches: Batches, publish: Publish) -> None:
    """Publish each finished batch in order until None; the first failure ends it (and stops the reader)."""
    while (batch := await batches.get()) is not None:
        await publish(await batch)


def _retrieve(future: asyncio.Future[bytes]) -> None:
    """Mark a batch's error as seen, so that asyncio does not log it when the body failed elsewhere."""
    if not future.cancelled():
        future.exception()
